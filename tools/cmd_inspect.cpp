// moin inspect FILE: describe a safetensors file as JSON (tensors, dtypes, shapes, offsets, hashes,
// metadata). --copy-to OUT re-writes it through moin's own reader and writer (the Python reference test
// uses it to check that files we write load identically in the `safetensors` package).
#include <iostream>

#include "cli.h"
#include "moin/model/safetensors.h"

namespace moin::cli {

void register_inspect(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "Describe a safetensors file as JSON (validates it fully)");
  auto& common = add_common(cmd);
  static std::string file, copy_to;
  cmd->add_option("file", file, "a .safetensors file")->required();
  cmd->add_option("--copy-to", copy_to, "also re-write the file here with moin's writer (same tensors, metadata)");
  set_action(cmd, common, [] {
    auto f = st::File::open(file);
    std::cout << st::describe(f).dump(2) << "\n";
    if (!copy_to.empty()) {
      std::vector<std::pair<std::string, st::TensorView>> views;
      for (const auto& t : f.tensors()) views.push_back({t.name, {t.dtype, t.shape, f.data(t), t.nbytes()}});
      st::write(copy_to, views, f.metadata());
      spdlog::info("wrote {} ({} tensors)", copy_to, views.size());
    }
  });
}

}  // namespace moin::cli
