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

// A bar chart: one bar per (label, value). Returns false (with a warning) when the plot was not drawn.
bool plot_bars(const std::string& png, const std::string& title, const std::string& ylabel,
               const std::vector<std::pair<std::string, double>>& bars);

// Lines over a shared x axis: series[i] = (name, y values, one per x).
bool plot_lines(const std::string& png, const std::string& title, const std::string& xlabel,
                const std::string& ylabel, const std::vector<double>& x,
                const std::vector<std::pair<std::string, std::vector<double>>>& series, bool log_x = false);

}  // namespace moin
