// `moin`: one executable, one subcommand per pipeline step. Logic lives in the library; see cli.h.
#include <cstdio>

#include "cli.h"
#include "moin/core/error.h"

namespace moin::cli {
std::function<void()>& pending_action();
}

int main(int argc, char** argv) {
  CLI::App app{
      "moin: Mixture of Introvert Experts. Upcycle a frozen LLM with one LoRA expert per data cluster:\n"
      "partition the corpus, train each expert on its own, route every query to its nearest expert."};
  app.require_subcommand(1);
  app.set_version_flag("--version", MOIN_VERSION);
  moin::cli::register_tokenizer(app);
  moin::cli::register_config(app);
  moin::cli::register_route(app);
  moin::cli::register_eval(app);
  moin::cli::register_run(app);
  moin::cli::register_partition(app);
  moin::cli::register_eval_metrics(app);
  moin::cli::register_train(app);
  moin::cli::register_launch(app);
  moin::cli::register_convert(app);
  moin::cli::register_init_model(app);
  moin::cli::register_generate(app);
  moin::cli::register_logits(app);
  moin::cli::register_lora(app);
  moin::cli::register_embed(app);
  moin::cli::register_inspect(app);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : 2;  // --help and --version exit 0; any usage error is a user error
  }
  try {
    auto& action = moin::cli::pending_action();
    if (action) action();
    return 0;
  } catch (const moin::UserError& e) {
    std::fprintf(stderr, "moin: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moin: failed: %s\n", e.what());
    return 1;
  } catch (...) {
    std::fprintf(stderr, "moin: failed: unknown exception\n");
    return 1;
  }
}
