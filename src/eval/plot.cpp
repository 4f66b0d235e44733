// gnuplot-driven PNG plots (see plot.h).
#include "moin/eval/plot.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <sstream>

#include "moin/core/fs.h"
#include "moin/core/process.h"

namespace moin {

namespace stdfs = std::filesystem;

std::string find_gnuplot() {
  if (const char* env = std::getenv("MOIN_GNUPLOT")) return ::access(env, X_OK) == 0 ? env : "";
  const char* path = std::getenv("PATH");
  std::istringstream ss(path ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    auto p = stdfs::path(dir.empty() ? "." : dir) / "gnuplot";
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "";
}

namespace {

std::string quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\n') {  // a line break inside a label: gnuplot's escape in a double-quoted string
      out += "\\n";
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

bool run_script(const std::string& png, const std::string& script) {
  static bool warned = false;
  std::string gp = find_gnuplot();
  if (gp.empty()) {
    if (!warned) spdlog::warn("gnuplot not found (apt-get install gnuplot-nox): plots skipped");
    warned = true;
    return false;
  }
  std::string script_path = stdfs::path(png).replace_extension(".gp").string();
  fs::write_atomic(script_path, script);
  auto r = run_process({gp, script_path}, true);
  if (r.exit_code != 0 || !stdfs::exists(png)) {
    spdlog::warn("gnuplot failed on {} (exit {}): {}", script_path, r.exit_code, r.output.substr(0, 500));
    return false;
  }
  return true;
}

std::string header(const std::string& png, const std::string& title) {
  return "set terminal pngcairo size 900,540 noenhanced font 'Sans,10'\n"
         "set output " + quote(png) + "\nset title " + quote(title) + "\nset grid ytics\nset key outside right\n";
}

}  // namespace

std::string wrap_label(const std::string& label, std::size_t width) {
  std::istringstream words(label);
  std::string word, line, out;
  while (words >> word) {
    if (!line.empty() && line.size() + 1 + word.size() > width) {
      out += (out.empty() ? "" : "\n") + line;
      line.clear();
    }
    line += (line.empty() ? "" : " ") + word;
  }
  if (!line.empty()) out += (out.empty() ? "" : "\n") + line;
  return out;
}

bool plot_bars(const std::string& png, const std::string& title, const std::string& ylabel,
               const std::vector<std::pair<std::string, double>>& bars, const BarStyle& style) {
  std::string data = stdfs::path(png).replace_extension(".dat").string();
  std::ostringstream d;
  std::size_t lines = 1;
  double lo = 0.0, hi = 0.0;
  std::string tics;
  for (std::size_t i = 0; i < bars.size(); ++i) {
    const auto& [name, v] = bars[i];
    const std::string wrapped = wrap_label(name);
    lines = std::max<std::size_t>(lines, 1 + static_cast<std::size_t>(std::count(wrapped.begin(), wrapped.end(), '\n')));
    d << i << " " << v << "\n";
    tics += (i ? ", " : "") + quote(wrapped) + " " + std::to_string(i);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  fs::write_atomic(data, d.str());
  std::ostringstream s;
  // Room below for the wrapped labels, above for the values: nothing runs off the edge or into the title.
  s << header(png, title) << "set ylabel " << quote(ylabel) << "\nset style fill solid 0.7 border -1\n"
    << "set boxwidth 0.6\nset bmargin " << 2 + lines << "\nset tmargin 4\nunset key\n"
    << "set xtics (" << tics << ")\nset xrange [-0.6:" << static_cast<double>(bars.size()) - 0.4 << "]\n";
  if (style.from_zero) {
    s << "set yrange [0:" << (hi > 0 ? hi * 1.12 : 1.0) << "]\n";
  } else {
    const double span = std::max({hi - lo, style.min_span, 1e-9}), mid = 0.5 * (hi + lo);
    s << "set yrange [" << std::min(lo, mid - 0.5 * span) - 0.15 * span << ":" << std::max(hi, mid + 0.5 * span) + 0.15 * span
      << "]\n"
      << "set xzeroaxis lt -1 lw 1\n";
  }
  const std::string fmt = "%." + std::to_string(style.decimals) + "f" + (style.suffix == "%" ? "%%" : style.suffix);
  const double off = 0.04 * std::max({hi - lo, style.min_span, 1e-9});  // the value just above a bar (below a negative one)
  s << "plot " << quote(data) << " using 1:2 with boxes lc rgb '#4477aa', '' using 1:($2 < 0 ? $2 - " << off
    << " : $2 + " << off << "):(sprintf(" << quote(fmt) << ", $2)) with labels notitle\n";
  return run_script(png, s.str());
}

bool plot_lines(const std::string& png, const std::string& title, const std::string& xlabel,
                const std::string& ylabel, const std::vector<double>& x,
                const std::vector<std::pair<std::string, std::vector<double>>>& series, bool log_x) {
  std::string data = stdfs::path(png).replace_extension(".dat").string();
  std::ostringstream d;
  d << "# x";
  for (const auto& s : series) d << " " << quote(s.first);
  d << "\n";
  for (std::size_t i = 0; i < x.size(); ++i) {
    d << x[i];
    for (const auto& s : series) d << " " << (i < s.second.size() ? s.second[i] : 0.0);
    d << "\n";
  }
  fs::write_atomic(data, d.str());
  std::ostringstream s;
  s << header(png, title) << "set xlabel " << quote(xlabel) << "\nset ylabel " << quote(ylabel) << "\n";
  s << "set key inside bottom right\n";
  if (log_x) s << "set logscale x 2\n";
  if (!x.empty()) {  // a margin so the first and last ticks are drawn
    double lo = *std::min_element(x.begin(), x.end()), hi = *std::max_element(x.begin(), x.end());
    if (log_x) s << "set xrange [" << lo / 1.25 << ":" << hi * 1.25 << "]\n";
    else s << "set xrange [" << lo - 0.05 * (hi - lo) << ":" << hi + 0.05 * (hi - lo) << "]\n";
  }
  s << "set xtics (";
  for (std::size_t i = 0; i < x.size(); ++i) s << (i ? ", " : "") << x[i];
  s << ")\nplot ";
  for (std::size_t i = 0; i < series.size(); ++i)
    s << (i ? ", " : "") << quote(data) << " using 1:" << (i + 2) << " with linespoints lw 2 title "
      << quote(series[i].first);
  s << "\n";
  return run_script(png, s.str());
}

}  // namespace moin
