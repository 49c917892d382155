// Time-series charts (uPlot, vendored: see ../vendor/README.md), one line per group.

const PALETTE = ["#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2", "#ca8a04", "#64748b"];

// `times` in Unix seconds; `series` maps a label to one value per time.
export function lineChart(container, { title, times, series, format = (v) => v }) {
  const labels = Object.keys(series);
  const opts = {
    title,
    width: Math.max(container.clientWidth, 320),
    height: 220,
    scales: { x: { time: true } },
    axes: [{}, { values: (_, ticks) => ticks.map(format), size: 70 }],
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
  const data = [times, ...labels.map((label) => series[label])];
  const chart = new uPlot(opts, data, container); // eslint-disable-line no-undef
  const resize = () => chart.setSize({ width: Math.max(container.clientWidth, 320), height: 220 });
  window.addEventListener("resize", resize);
  return () => {
    window.removeEventListener("resize", resize);
    chart.destroy();
  };
}
