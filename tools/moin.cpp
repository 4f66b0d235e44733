// `moin`: one executable, one subcommand per pipeline step. Logic lives in the library; see cli.h.
#include <cstdio>

#include "cli.h"
#include "moin/core/error.h"
#include "moin/core/process.h"

namespace moin::cli {
std::function<void()>& pending_action();
}

int main(int argc, char** argv) {
  moin::reuse_freed_memory();
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
    moin::cli::check_flags(app, argc, argv);
  } catch (const moin::UserError& e) {
    std::fprintf(stderr, "moin: error: %s\n", e.what());
    return 2;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help and --version
    // A usage error is a user error like any other: one `moin: error:` line, exit 2.
    std::string msg = e.what();
    for (char& c : msg)
      if (c == '\n') c = ' ';
    while (!msg.empty() && msg.back() == ' ') msg.pop_back();
    std::fprintf(stderr, "moin: error: %s (see --help)\n", msg.c_str());
    return 2;
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
