// A bar chart of a short series on a <canvas>, drawn at the screen's pixel density, in the
// stylesheet's colours (read from CSS variables, so the chart follows the page's theme).

export function drawBars(canvas, values, { labelEvery = 5 } = {}) {
  const style = getComputedStyle(document.documentElement);
  const colour = (name) => style.getPropertyValue(name).trim();
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth;
  const height = canvas.clientHeight;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.clearRect(0, 0, width, height);

  const left = 36;
  const bottom = 20;
  const top = 8;
  const plotHeight = height - bottom - top;
  const highest = Math.max(1, ...values);
  const step = niceStep(highest);
  const ceiling = Math.ceil(highest / step) * step;

  context.font = `11px ${colour("--font")}`;
  context.fillStyle = colour("--muted");
  context.strokeStyle = colour("--line");
  context.lineWidth = 1;
  context.textAlign = "right";
  context.textBaseline = "middle";
  for (let mark = 0; mark <= ceiling; mark += step) {
    const y = top + plotHeight - (mark / ceiling) * plotHeight;
    context.beginPath();
    context.moveTo(left, Math.round(y) + 0.5);
    context.lineTo(width, Math.round(y) + 0.5);
    context.stroke();
    context.fillText(String(mark), left - 6, y);
  }

  const slot = (width - left) / values.length;
  const bar = Math.max(2, slot * 0.68);
  context.textAlign = "center";
  context.textBaseline = "top";
  values.forEach((value, index) => {
    const x = left + index * slot + (slot - bar) / 2;
    const barHeight = (value / ceiling) * plotHeight;
    context.fillStyle = colour("--accent");
    context.fillRect(x, top + plotHeight - barHeight, bar, barHeight);
    const minutesAgo = values.length - 1 - index;
    if (minutesAgo % labelEvery === 0) {
      context.fillStyle = colour("--muted");
      context.fillText(minutesAgo === 0 ? "now" : `-${minutesAgo}m`, x + bar / 2, height - bottom + 5);
    }
  });
}

function niceStep(highest) {
  const rough = highest / 4;
  const magnitude = 10 ** Math.floor(Math.log10(rough || 1));
  for (const factor of [1, 2, 5, 10]) {
    if (factor * magnitude >= rough) return Math.max(1, factor * magnitude);
  }
  return magnitude * 10;
}

// A tiny inline sparkline (SVG) for a table cell.
export function sparkline(values) {
  const width = 90;
  const height = 22;
  const highest = Math.max(1, ...values);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(height));
  svg.setAttribute("class", "spark");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `finished per minute: ${values.join(", ")}`);
  const slot = width / values.length;
  values.forEach((value, index) => {
    const rect = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    const barHeight = Math.max(value ? 2 : 1, (value / highest) * (height - 2));
    rect.setAttribute("x", String(index * slot + 1));
    rect.setAttribute("y", String(height - barHeight));
    rect.setAttribute("width", String(Math.max(1, slot - 2)));
    rect.setAttribute("height", String(barHeight));
    if (!value) rect.setAttribute("class", "zero");
    svg.append(rect);
  });
  return svg;
}
