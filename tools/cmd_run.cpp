// moin run CONFIG: the whole pipeline into one run directory (see moin/run/pipeline.h).
#include <iostream>

#include "cli.h"
#include "moin/core/fs.h"
#include "moin/run/pipeline.h"

namespace moin::cli {

void register_run(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "run", "Run the whole pipeline from one config: tokenizer, partition, base, experts, evaluation, report");
  auto& common = add_common(cmd);
  static std::string config_file, output;
  cmd->add_option("run_config", config_file, "run config (JSON); see configs/demo.json (or --config FILE)");
  auto* o_out = cmd->add_option("--output", output, "run directory (overrides the config's output)");
  cmd->footer("\nTop-level config keys (the stage sections " +
              [] {
                std::string s;
                for (const auto& x : run_config_sections()) s += (s.empty() ? "" : ", ") + x;
                return s;
              }() +
              "\ntake the keys of each stage's own config, see `moin config <stage>`):\n" +
              config::format_reference(config::describe(RunOptions{})));
  set_action(cmd, common, [o_out, &common] {
    std::string file = config_file.empty() ? common.config : config_file;
    require(!file.empty(), "run: give a config file (moin run configs/demo.json)");
    json cfg = config::read_file(file);
    require(cfg.is_object(), "run: " + file + " must hold a JSON object");
    json defaults = config::to_json(RunOptions{});
    for (const auto& s : common.sets) config::apply_override(cfg, s, defaults);
    if (o_out->count()) cfg["output"] = output;
    json sections;
    auto opts = parse_run_config(cfg, &sections);
    auto report = run_pipeline(opts, sections);
    std::cout << fs::read_text(std::filesystem::path(opts.output) / "report" / "report.md");
  });
}

}  // namespace moin::cli
