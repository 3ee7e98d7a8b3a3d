// Small SVG charts for bench results: grouped bars and step lines. Self-contained files that
// any browser shows, so results need no plotting stack to be looked at.

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b'];
const W = 900;
const H = 420;
const M = { top: 48, right: 170, bottom: 96, left: 64 };

export interface BarChart {
  title: string;
  yLabel: string;
  /** One group of bars per label along x. */
  groups: readonly string[];
  /** One bar per group for each series (same order as `groups`). */
  series: readonly { name: string; values: readonly number[] }[];
}

export interface LineChart {
  title: string;
  xLabel: string;
  yLabel: string;
  series: readonly { name: string; points: readonly (readonly [number, number])[]; step?: boolean }[];
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const num = (x: number) => (Number.isInteger(x) ? String(x) : x.toFixed(Math.abs(x) < 10 ? 2 : 0));

/** A "nice" upper bound and tick step for values up to `max`. */
function scale(max: number): { top: number; step: number } {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) ?? 10 * mag;
  return { top: Math.ceil(max / step) * step, step };
}

function frame(title: string, yLabel: string, top: number, step: number, xLabel = ''): string[] {
  const [pw, ph] = [W - M.left - M.right, H - M.top - M.bottom];
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="24" text-anchor="middle" font-size="15">${esc(title)}</text>`,
    `<text transform="translate(16 ${M.top + ph / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`,
  ];
  if (xLabel) out.push(`<text x="${M.left + pw / 2}" y="${H - 12}" text-anchor="middle">${esc(xLabel)}</text>`);
  for (let v = 0; v <= top + step / 2; v += step) {
    const y = M.top + ph - (v / top) * ph;
    out.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${y}" y2="${y}" stroke="#ddd"/>`);
    out.push(`<text x="${M.left - 6}" y="${y + 4}" text-anchor="end">${num(v)}</text>`);
  }
  out.push(`<line x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${M.top + ph}" stroke="#333"/>`);
  return out;
}

function legend(names: readonly string[]): string[] {
  return names.flatMap((name, i) => {
    const y = M.top + 8 + i * 20;
    const x = W - M.right + 16;
    return [
      `<rect x="${x}" y="${y - 9}" width="12" height="12" fill="${PALETTE[i % PALETTE.length]}"/>`,
      `<text x="${x + 18}" y="${y + 1}">${esc(name)}</text>`,
    ];
  });
}

export function barChart(c: BarChart): string {
  const [pw, ph] = [W - M.left - M.right, H - M.top - M.bottom];
  const max = Math.max(0, ...c.series.flatMap((s) => s.values.filter(Number.isFinite)));
  const { top, step } = scale(max);
  const out = frame(c.title, c.yLabel, top, step);
  const gw = pw / Math.max(1, c.groups.length);
  const bw = (gw * 0.8) / Math.max(1, c.series.length);
  c.groups.forEach((g, gi) => {
    const x0 = M.left + gi * gw + gw * 0.1;
    c.series.forEach((s, si) => {
      const v = s.values[gi] ?? NaN;
      if (!Number.isFinite(v)) return;
      const h = (v / top) * ph;
      const color = PALETTE[si % PALETTE.length] ?? '#000';
      out.push(
        `<rect x="${x0 + si * bw}" y="${M.top + ph - h}" width="${bw - 1}" height="${h}" fill="${color}"><title>${esc(`${g}, ${s.name}: ${num(v)}`)}</title></rect>`,
      );
    });
    const lx = x0 + gw * 0.4;
    out.push(`<text transform="translate(${lx} ${M.top + ph + 12}) rotate(30)" text-anchor="start">${esc(g)}</text>`);
  });
  out.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${M.top + ph}" y2="${M.top + ph}" stroke="#333"/>`);
  out.push(...legend(c.series.map((s) => s.name)), '</svg>');
  return `${out.join('\n')}\n`;
}

export function lineChart(c: LineChart): string {
  const [pw, ph] = [W - M.left - M.right, H - M.top - M.bottom];
  const all = c.series.flatMap((s) => s.points);
  const xmax = Math.max(1e-9, ...all.map(([x]) => x));
  const { top, step } = scale(Math.max(0, ...all.map(([, y]) => y)));
  const out = frame(c.title, c.yLabel, top, step, c.xLabel);
  const xs = scale(xmax);
  for (let v = 0; v <= xs.top + xs.step / 2; v += xs.step) {
    const x = M.left + (v / xs.top) * pw;
    out.push(`<text x="${x}" y="${M.top + ph + 16}" text-anchor="middle">${num(v)}</text>`);
  }
  const px = (x: number) => M.left + (x / xs.top) * pw;
  const py = (y: number) => M.top + ph - (y / top) * ph;
  c.series.forEach((s, si) => {
    const pts: string[] = [];
    s.points.forEach(([x, y], i) => {
      const prev = s.points[i - 1];
      if (s.step && prev) pts.push(`${px(x)},${py(prev[1])}`);
      pts.push(`${px(x)},${py(y)}`);
    });
    out.push(`<polyline fill="none" stroke-width="2" stroke="${PALETTE[si % PALETTE.length]}" points="${pts.join(' ')}"/>`);
  });
  out.push(`<line x1="${M.left}" x2="${M.left + pw}" y1="${M.top + ph}" y2="${M.top + ph}" stroke="#333"/>`);
  out.push(...legend(c.series.map((s) => s.name)), '</svg>');
  return `${out.join('\n')}\n`;
}
