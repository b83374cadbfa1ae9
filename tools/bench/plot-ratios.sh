#!/usr/bin/env bash
# tools/bench/plot-ratios.sh — plot anyproxy against its peers as ratios
# (greater than 1: anyproxy is better) with each scenario's bar, from a TSV
# in the format of docs/bench/2026-12-07-ratios.tsv, into an SVG.
#   tools/bench/plot-ratios.sh docs/bench/2026-12-07-ratios.tsv docs/bench/2026-12-07-ratios.svg
# Needs gnuplot (Debian: gnuplot-nox). Ratio = anyproxy / peer where higher
# is better, peer / anyproxy where lower is better (memory).
set -euo pipefail
in=${1:?usage: plot-ratios.sh IN.tsv OUT.svg}
out=${2:?usage: plot-ratios.sh IN.tsv OUT.svg}
command -v gnuplot >/dev/null || { echo "gnuplot not installed (apt-get install gnuplot-nox)" >&2; exit 1; }
data=$(mktemp)
trap 'rm -f "$data"' EXIT
awk -F'\t' '!/^#/ && NF >= 6 {
    r = ($6 == "lower") ? $4 / $2 : $2 / $4
    printf "\"%s\\nvs %s\"\t%.3f\t%.2f\n", $1, $3, r, $5
}' "$in" >"$data"
gnuplot <<GP
set terminal svg size 900,480 font "sans,12" background rgb "white"
set output "$out"
set title "anyproxy (full TLS chain) against its peers: ratio, > 1 is better"
set style data histograms
set style histogram clustered gap 2
set style fill solid 0.8 border -1
set boxwidth 0.8
set bmargin 4
set yrange [0:*]
set grid ytics
set ylabel "ratio"
set xtics font ",10"
set key top left
plot "$data" using 2:xtic(1) title "measured" lc rgb "#3465a4", \
     "" using 0:3 with points pt 7 ps 1.2 lc rgb "#cc0000" title "bar", \
     "" using 0:2:(sprintf("%.2f", column(2))) with labels offset 0,0.8 notitle
GP
echo "wrote $out"
