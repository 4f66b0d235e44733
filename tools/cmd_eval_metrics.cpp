// moin eval nmi --labels FILE --clusters FILE: NMI, purity and top labels per cluster as JSON on stdout.
#include <iostream>

#include "cli.h"
#include "moin/core/cluster_metrics.h"

namespace moin::cli {

namespace {
// One entry per line (a trailing newline does not add an empty entry).
std::vector<std::string> read_lines(const std::string& path) {
  std::string text = fs::read_text(path);
  std::vector<std::string> out;
  std::size_t b = 0;
  while (b < text.size()) {
    std::size_t e = text.find('\n', b);
    if (e == std::string::npos) e = text.size();
    std::string line = text.substr(b, e - b);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    out.push_back(line);
    b = e + 1;
  }
  return out;
}
}  // namespace

void register_eval_metrics(CLI::App* eval) {
  auto* cmd = eval->add_subcommand("nmi", "NMI (arithmetic normalisation), purity and top labels of clusters vs labels");
  auto& common = add_common(cmd);
  static std::string labels, clusters;
  static int top = 3;
  cmd->add_option("--labels", labels, "reference labels, one per line")->required();
  cmd->add_option("--clusters", clusters, "cluster ids (any strings), one per line, same order")->required();
  cmd->add_option("--top", top, "labels listed per cluster")->default_val(3);
  set_action(cmd, common, [] {
    auto report = cluster_report(read_lines(labels), read_lines(clusters), top);
    std::cout << report.dump() << "\n";
  });
}

}  // namespace moin::cli
