// The operator console: fills the "now" tables and draws the 24-hour charts (uPlot) from the console's snapshot,
// then fetches the snapshot again every few seconds. Words arrive translated, in the page (headings, empty
// tables) and in the JSON (labels); numbers, times and durations are formatted here with Intl, in the page's language.

(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("console-config").textContent);
  const root = document.getElementById("console");
  const language = document.documentElement.lang || "en";
  const numbers = new Intl.NumberFormat(language, { maximumFractionDigits: 1 });
  const relative = new Intl.RelativeTimeFormat(language, { numeric: "auto" });
  const clock = new Intl.DateTimeFormat(language, { hour: "2-digit", minute: "2-digit" });
  const moment = new Intl.DateTimeFormat(language, { dateStyle: "short", timeStyle: "short" });
  const PALETTE = ["#2f6fdf", "#e0812b", "#2a9d58", "#d64545", "#8a5cc2", "#3aa6b9", "#b8860b", "#7f7f7f"];
  const CHART_HEIGHT = 220;
  const charts = new Map();

  const pick = (data, path) => path.split(".").reduce((value, key) => value?.[key], data);

  // --- Formats --------------------------------------------------------------------------------------

  function formatRelative(seconds) {
    const size = Math.abs(seconds);
    const [amount, unit] =
      size < 60 ? [seconds, "second"] : size < 3600 ? [seconds / 60, "minute"] : [seconds / 3600, "hour"];
    return relative.format(Math.round(amount) || 0, unit);
  }

  function formatDuration(seconds) {
    const total = Math.max(0, Math.round(seconds));
    const hours = Math.floor(total / 3600);
    const minutes = String(Math.floor((total % 3600) / 60)).padStart(hours ? 2 : 1, "0");
    const rest = `${minutes}:${String(total % 60).padStart(2, "0")}`;
    return hours ? `${hours}:${rest}` : rest;
  }

  const FORMATS = {
    clock: (iso) => clock.format(new Date(iso)),
    duration: formatDuration,
    number: (value) => numbers.format(value),
    relative: formatRelative,
  };

  function formatted(format, value) {
    if (value === null || value === undefined || value === "") {
      return "—";
    }
    return FORMATS[format] ? FORMATS[format](value) : String(value);
  }

  // --- Tables and fields ----------------------------------------------------------------------------

  function cell(column, row) {
    const { key, format, title } = column.dataset;
    const td = document.createElement("td");
    if (format === "link") {
      const link = document.createElement("a");
      link.href = row.url;
      link.textContent = row[key];
      td.append(link);
    } else if (format === "code" && row[key]) {
      const code = document.createElement("code");
      code.textContent = row[key];
      td.append(code);
    } else {
      td.textContent = formatted(format, row[key]);
    }
    if (title && row[title]) {
      td.title = row[title];
    }
    return td;
  }

  function fillTable(table, snapshot) {
    const { rows, more } = pick(snapshot, table.dataset.rows);
    const columns = [...table.querySelectorAll("thead th")];
    const body = table.tBodies[0];
    body.replaceChildren(
      ...rows.map((row) => {
        const tr = document.createElement("tr");
        tr.dataset.job = row.id;
        tr.append(...columns.map((column) => cell(column, row)));
        return tr;
      }),
    );
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = columns.length;
      td.className = "console-empty";
      td.textContent = table.dataset.empty;
      tr.append(td);
      body.append(tr);
    }
    table.caption?.remove();
    if (more) {
      const caption = table.createCaption();
      caption.className = "console-more";
      caption.textContent = more;
    }
  }

  function fillFields(snapshot) {
    for (const field of root.querySelectorAll("[data-field]")) {
      field.textContent = formatted(field.dataset.format, pick(snapshot, field.dataset.field));
    }
  }

  // --- Charts ---------------------------------------------------------------------------------------

  const sum = (values) => values.reduce((total, value) => total + (value ?? 0), 0);
  const latest = (values) => values.findLast((value) => value !== null) ?? null;

  function chartOptions(container, chart) {
    const styles = getComputedStyle(document.documentElement);
    const ink = styles.getPropertyValue("--body-fg").trim() || "#333";
    const hairline = styles.getPropertyValue("--hairline-color").trim() || "#e8e8e8";
    const summarize = chart.summary === "total" ? sum : latest;
    const axis = { stroke: ink, grid: { stroke: hairline, width: 1 }, ticks: { stroke: hairline, width: 1 } };
    return {
      width: container.clientWidth,
      height: CHART_HEIGHT,
      series: [
        // Without a cursor on the chart (index null), the legend sums up the 24 hours instead of one bucket.
        {
          label: chart.x_label,
          value: (plot, x, seriesIndex, index) => (index == null ? chart.summary_label : moment.format(x * 1000)),
        },
        ...chart.series.map((series, index) => ({
          label: series.label,
          stroke: PALETTE[index % PALETTE.length],
          width: 1.5,
          points: { show: chart.step > 60 },
          value: (plot, y, seriesIndex, index) =>
            formatted("number", index == null ? summarize(plot.data[seriesIndex]) : y),
        })),
      ],
      axes: [
        { ...axis, values: (plot, splits) => splits.map((x) => clock.format(x * 1000)) },
        { ...axis, label: chart.unit, size: 60 },
      ],
      scales: { y: { range: (plot, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
    };
  }

  function drawChart(container, chart) {
    const data = [chart.x, ...chart.series.map((series) => series.values)];
    const keys = chart.series.map((series) => series.key).join(" ");
    const drawn = charts.get(container);
    if (drawn && drawn.keys === keys) {
      drawn.plot.setData(data);
      drawn.plot.setLegend({ idx: null });
      return;
    }
    drawn?.plot.destroy();
    charts.set(container, { keys, plot: new uPlot(chartOptions(container, chart), data, container) });
    resized.observe(container);
  }

  // --- Refreshing -----------------------------------------------------------------------------------

  function render(snapshot) {
    fillFields(snapshot);
    for (const table of root.querySelectorAll("table[data-rows]")) {
      fillTable(table, snapshot);
    }
    for (const container of root.querySelectorAll("[data-chart]")) {
      drawChart(container, snapshot.charts[container.dataset.chart]);
    }
  }

  async function refresh() {
    const stale = root.querySelector(".console-stale");
    try {
      const response = await fetch(config.dataUrl, { headers: { Accept: "application/json" } });
      if (response.status === 403) {
        window.location.reload(); // Signed out meanwhile: the page itself goes to the sign-in form.
        return;
      }
      if (!response.ok) {
        throw new Error(`console data: HTTP ${response.status}`);
      }
      render(await response.json());
      stale.hidden = true;
    } catch (error) {
      stale.hidden = false;
      console.warn(error);
    }
  }

  // The charts follow their column's width: the window's, and the admin's sidebar opening or closing.
  const resized = new ResizeObserver((entries) => {
    for (const { target } of entries) {
      const plot = charts.get(target)?.plot;
      if (plot && plot.width !== target.clientWidth) {
        plot.setSize({ width: target.clientWidth, height: CHART_HEIGHT });
      }
    }
  });

  render(JSON.parse(document.getElementById("console-snapshot").textContent));
  window.setInterval(refresh, config.refreshSeconds * 1000);
})();
