// SVG figures of the benchmark results, rendered headless: Vega-Lite specs
// compiled to Vega and drawn by vega's View.toSVG() (renderer 'none': no
// browser, no canvas; text widths are estimated, which SVG viewers then
// lay out with their own fonts).
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse, View } from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

export interface FigureData {
  /** Creation time (ms) against the number of VMs already running (peers are references at the same moments: nothing of theirs is kept running). */
  creation: { series: string; running: number; p50_ms: number; p90_ms?: number }[]; // series e.g. 'lightvm cold', 'lightvm warm', 'crun', 'fork+exec'
  /** Host memory per VM (KiB, kernel included) against the number of VMs. */
  memory: { running: number; kib_per_vm: number }[];
  title?: string; // e.g. machine/date note shown as a subtitle
}

const WIDTH = 640;
const HEIGHT = 360;
const FONT = 'Helvetica, Arial, sans-serif';

// Without a canvas vega estimates text widths generously (about 0.8 em a
// character): a rotated y-axis title longer than the plot is tall pushes
// the plot down, so the axis titles are kept short and the details go
// into the title and subtitle.
const CONFIG: TopLevelSpec['config'] = {
  font: FONT,
  background: 'white',
  padding: 12,
  view: { stroke: '#ddd' },
  title: { fontSize: 16, subtitleFontSize: 12, subtitleColor: '#555', anchor: 'start', offset: 16 },
  axis: { labelFontSize: 12, titleFontSize: 13, titleFontWeight: 'normal', gridColor: '#eee', titlePadding: 10 },
  legend: { labelFontSize: 12, titleFontSize: 12, symbolStrokeWidth: 2, symbolOpacity: 1, symbolSize: 80 },
};

function header(title: string, ...subtitle: (string | undefined)[]): TopLevelSpec['title'] {
  const lines = subtitle.filter((s): s is string => !!s);
  return lines.length ? { text: title, subtitle: lines } : title;
}

function check(ok: boolean, what: string): void {
  if (!ok) throw new RangeError(`renderFigures: ${what}`);
}

function creationSpec(data: FigureData): TopLevelSpec {
  const rows = data.creation.map((r) => ({ ...r, p90_ms: r.p90_ms ?? null }));
  // Series keep the order in which they first appear (the legend order).
  const series = [...new Set(rows.map((r) => r.series))];
  const hasP90 = rows.some((r) => r.p90_ms !== null);
  const x = {
    field: 'running', type: 'quantitative' as const, title: 'LightVM VMs already running',
    scale: { zero: true, nice: true }, axis: { format: ',d' },
  };
  const y = {
    field: 'p50_ms', type: 'quantitative' as const,
    title: 'Time per instance (ms, log scale)',
    scale: { type: 'log' as const, nice: true }, axis: { format: '~g', grid: true },
  };
  const color = {
    field: 'series', type: 'nominal' as const, title: null,
    scale: { domain: series, scheme: 'tableau10' },
    legend: { orient: 'right' as const },
  };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: header('Creation time against VMs already running', data.title,
      (hasP90 ? 'Points: median (p50); bars reach p90. ' : 'Points: median (p50). ') +
      'lightvm: API request to the booted reply, VM kept; fork+exec: a whole process, nothing kept running (reference)'),
    width: WIDTH,
    height: HEIGHT,
    config: CONFIG,
    data: { values: rows },
    encoding: { x, color },
    layer: [
      ...(hasP90 ? [{
        transform: [{ filter: 'isValid(datum.p90_ms)' }],
        mark: { type: 'rule' as const, strokeWidth: 1.5, opacity: 0.45 },
        encoding: { y, y2: { field: 'p90_ms' } },
      }] : []),
      { mark: { type: 'line' as const, strokeWidth: 2, interpolate: 'monotone' as const }, encoding: { y } },
      { mark: { type: 'point' as const, filled: true, size: 36, opacity: 1 }, encoding: { y, shape: { field: 'series', type: 'nominal' as const, title: null, scale: { domain: series } } } },
    ],
  };
}

function memorySpec(data: FigureData): TopLevelSpec {
  const y = {
    field: 'kib_per_vm', type: 'quantitative' as const, title: 'Host memory per VM (KiB)',
    scale: { zero: true, nice: true }, axis: { format: ',d', grid: true },
  };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: header('Host memory per VM against VMs running', data.title, 'Host memory used per VM, kernel memory included'),
    width: WIDTH,
    height: HEIGHT,
    config: CONFIG,
    data: { values: data.memory },
    encoding: {
      x: { field: 'running', type: 'quantitative', title: 'VMs running', scale: { zero: true, nice: true }, axis: { format: ',d' } },
    },
    layer: [
      { mark: { type: 'line', strokeWidth: 2, color: '#4c78a8' }, encoding: { y } },
      { mark: { type: 'point', filled: true, size: 36, opacity: 1, color: '#4c78a8' }, encoding: { y } },
    ],
  };
}

async function toSvg(spec: TopLevelSpec): Promise<string> {
  const view = new View(parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

function validate(data: FigureData): void {
  const finite = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v);
  check(Array.isArray(data.creation) && Array.isArray(data.memory), 'creation and memory must be arrays');
  data.creation.forEach((r, i) => {
    check(typeof r.series === 'string' && r.series.length > 0, `creation[${i}].series must be a non-empty string`);
    check(finite(r.running) && r.running >= 0, `creation[${i}].running must be a number >= 0`);
    // Log scale: a non-positive time cannot be drawn and would vanish silently.
    check(finite(r.p50_ms) && r.p50_ms > 0, `creation[${i}].p50_ms must be a number > 0`);
    check(r.p90_ms === undefined || (finite(r.p90_ms) && r.p90_ms > 0), `creation[${i}].p90_ms must be a number > 0`);
  });
  data.memory.forEach((r, i) => {
    check(finite(r.running) && r.running >= 0, `memory[${i}].running must be a number >= 0`);
    check(finite(r.kib_per_vm), `memory[${i}].kib_per_vm must be a number`);
  });
}

/**
 * Writes creation-time.svg and memory-per-vm.svg into outDir (created if
 * needed), and the data itself as figures.json beside them. A figure whose
 * data is empty is not written. Returns the paths of the SVGs written.
 */
export async function renderFigures(data: FigureData, outDir: string): Promise<string[]> {
  validate(data);
  await mkdir(outDir, { recursive: true });
  const figures: [string, () => TopLevelSpec, number][] = [
    ['creation-time.svg', () => creationSpec(data), data.creation.length],
    ['memory-per-vm.svg', () => memorySpec(data), data.memory.length],
  ];
  const written: string[] = [];
  for (const [name, spec, rows] of figures) {
    if (rows === 0) continue;
    const path = join(outDir, name);
    await writeFile(path, await toSvg(spec()));
    written.push(path);
  }
  await writeFile(join(outDir, 'figures.json'), JSON.stringify(data, null, 2) + '\n');
  return written;
}

/** One point of `bench xenstore`'s figure: a window of creations starting with `running` domains kept. */
export interface XenstorePoint {
  series: string;
  running: number;
  p50_ms: number;
  p90_ms: number;
}

/** The xenstore bench's figure: creation time of the N-th domain, p50 line and p90 bars, per series. */
export async function renderXenstoreFigure(points: XenstorePoint[], path: string, subtitle: string | string[],
  title = 'Creation time of the N-th domain, xenstore mode', running = 'Domains already running'): Promise<void> {
  points.forEach((r, i) => {
    check(typeof r.series === 'string' && r.series.length > 0, `points[${i}].series must be a non-empty string`);
    check(Number.isFinite(r.running) && r.running >= 0, `points[${i}].running must be a number >= 0`);
    check(Number.isFinite(r.p50_ms) && r.p50_ms > 0 && Number.isFinite(r.p90_ms) && r.p90_ms > 0, `points[${i}]: p50_ms and p90_ms must be numbers > 0`);
  });
  check(points.length > 0, 'no points to draw');
  const series = [...new Set(points.map((r) => r.series))];
  const y = {
    field: 'p50_ms', type: 'quantitative' as const, title: 'Creation time (ms, log scale)',
    scale: { type: 'log' as const, nice: true }, axis: { format: '~g', grid: true },
  };
  const spec: TopLevelSpec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: header(title, ...[subtitle].flat(), 'Points: median (p50) of a window of creations; bars reach p90'),
    width: WIDTH,
    height: HEIGHT,
    config: CONFIG,
    data: { values: points },
    encoding: {
      x: { field: 'running', type: 'quantitative', title: running, scale: { zero: true, nice: true }, axis: { format: ',d' } },
      color: { field: 'series', type: 'nominal', title: null, scale: { domain: series, scheme: 'tableau10' }, legend: { orient: 'bottom' } },
    },
    layer: [
      { mark: { type: 'rule', strokeWidth: 1.5, opacity: 0.45 }, encoding: { y, y2: { field: 'p90_ms' } } },
      { mark: { type: 'line', strokeWidth: 2 }, encoding: { y } },
      { mark: { type: 'point', filled: true, size: 36, opacity: 1 }, encoding: { y } },
    ],
  };
  await writeFile(path, await toSvg(spec));
}
