// Time-series charts (uPlot, vendored: see ../vendor/README.md), one line per group.

const PALETTE = ["#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2", "#ca8a04", "#64748b"];
const HEIGHT = 220;

// Axis labels: 1.2k, 3.4M; small fractions (costs) to two significant digits.
export function compact(value) {
  const abs = Math.abs(value);
  if (abs >= 1e6) return `${+(value / 1e6).toFixed(1)}M`;
  if (abs >= 1e3) return `${+(value / 1e3).toFixed(1)}k`;
  if (abs > 0 && abs < 1) return `${+value.toPrecision(2)}`;
  return `${+value.toFixed(2)}`;
}

// `times` in Unix seconds; `series` maps a label to one value per time. The chart takes its
// container's width and follows it. Returns {update(times, series), destroy()}; update keeps
// the labels the chart was made with.
export function lineChart(container, { title, times, series, format = compact }) {
  const labels = Object.keys(series);
  const width = () => Math.max(container.clientWidth - 16, 240);
  const opts = {
    title,
    width: width(),
    height: HEIGHT,
    scales: { x: { time: true } },
    axes: [{}, { values: (_, ticks) => ticks.map(compact), size: 56 }],
    series: [
      {},
      ...labels.map((label, i) => ({
        label,
        stroke: PALETTE[i % PALETTE.length],
        fill: PALETTE[i % PALETTE.length] + "22",
        width: 2,
        points: { show: true, size: 5 },
        value: (_, v) => (v === null ? "—" : format(v)),
      })),
    ],
  };
  const columns = (t, s) => [t, ...labels.map((label) => s[label])];
  const chart = new uPlot(opts, columns(times, series), container); // eslint-disable-line no-undef
  const observer = new ResizeObserver(() => chart.setSize({ width: width(), height: HEIGHT }));
  observer.observe(container);
  return {
    update: (t, s) => chart.setData(columns(t, s)),
    destroy: () => {
      observer.disconnect();
      chart.destroy();
    },
  };
}
