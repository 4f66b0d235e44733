// PNG plots for reports, drawn by gnuplot (Debian's gnuplot-nox): each plot writes its data file and a .gp
// script next to the PNG and runs gnuplot on it, so a plot can be restyled by editing the script. When
// gnuplot is absent the plots are skipped with one warning; reports never depend on them.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace moin {

// Path of the gnuplot executable found on PATH, or "" (overridable with $MOIN_GNUPLOT).
std::string find_gnuplot();

// How a bar chart shows its values.
struct BarStyle {
  int decimals = 2;        // of the value printed above each bar (0 for counts)
  bool from_zero = true;   // the y axis starts at 0; false: it spans the values (negative ones too), with a
                           // line at 0, so that a change of 2% is as visible as it is
  std::string suffix;      // after each printed value ("%")
  double min_span = 0.0;   // with from_zero false: the y axis spans at least this much (no magnified noise)
};

// A bar chart: one bar per (label, value). Long labels are wrapped onto several lines under their bar.
// Returns false (with a warning) when the plot was not drawn.
bool plot_bars(const std::string& png, const std::string& title, const std::string& ylabel,
               const std::vector<std::pair<std::string, double>>& bars, const BarStyle& style = {});

// A label wrapped at spaces into lines of at most `width` characters (joined with "\n").
std::string wrap_label(const std::string& label, std::size_t width = 16);

// Lines over a shared x axis: series[i] = (name, y values, one per x).
bool plot_lines(const std::string& png, const std::string& title, const std::string& xlabel,
                const std::string& ylabel, const std::vector<double>& x,
                const std::vector<std::pair<std::string, std::vector<double>>>& series, bool log_x = false);

}  // namespace moin
