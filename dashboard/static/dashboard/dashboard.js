/* The dashboard: filters in the URL, one read-API call (or two) per panel, each panel on its own.
 *
 * No build step: plain ES2020 run as is. Every number comes from the read API (same origin, the
 * session and its CSRF token). Timing marks for the benchmark and the browser tests:
 * "dash:load" (navigation start to every panel filled) and "dash:filter" (a filter change to
 * every panel filled again), as performance measures; window.dashboard exposes the state.
 */
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const root = document.getElementById("dashboard");
  const csrf = (document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/) || [])[1] || "";
  const nf = new Intl.NumberFormat("en-US");
  const pf = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2, minimumFractionDigits: 0 });
  const RANGES = ["7d", "30d", "90d", "month", "year", "all", "custom"];
  const PERIODS = ["auto", "day", "week", "month", "year"];
  const PAGE = 10;
  const countryNames = new Map();
  for (const option of document.querySelectorAll("#country-list option")) {
    const match = /^(.*) \(([A-Z]{2})\)$/.exec(option.value);
    if (match) countryNames.set(match[2], match[1]);
  }

  // --- State <-> URL -------------------------------------------------------------------------

  function stateFromUrl() {
    const q = new URLSearchParams(location.search);
    const list = (name) =>
      (q.get(name) || "")
        .split(",")
        .map((c) => c.trim().toUpperCase())
        .filter((c) => countryNames.has(c));
    const range = RANGES.includes(q.get("range")) ? q.get("range") : "30d";
    const period = PERIODS.includes(q.get("period")) ? q.get("period") : "auto";
    const isoDate = (v) => (/^\d{4}-\d{2}-\d{2}$/.test(v || "") ? v : "");
    return {
      range,
      start: range === "custom" ? isoDate(q.get("start")) : "",
      end: range === "custom" ? isoDate(q.get("end")) : "",
      country: [...new Set(list("country"))],
      exclude: [...new Set(list("exclude"))],
      author: (q.get("author") || "").slice(0, 150),
      period,
    };
  }

  function urlFromState(s) {
    const q = new URLSearchParams();
    if (s.range !== "30d") q.set("range", s.range);
    if (s.range === "custom") {
      if (s.start) q.set("start", s.start);
      if (s.end) q.set("end", s.end);
    }
    if (s.country.length) q.set("country", s.country.join(","));
    if (s.exclude.length) q.set("exclude", s.exclude.join(","));
    if (s.author) q.set("author", s.author);
    if (s.period !== "auto") q.set("period", s.period);
    const text = q.toString().replace(/%2C/g, ",");
    return location.pathname + (text ? "?" + text : "");
  }

  // --- Dates (UTC, ISO) -----------------------------------------------------------------------

  const DAY = 86400000;
  const toDate = (iso) => new Date(iso + "T00:00:00Z");
  const iso = (date) => date.toISOString().slice(0, 10);
  const addDays = (isoDay, n) => iso(new Date(toDate(isoDay).getTime() + n * DAY));
  const daysBetween = (a, b) => Math.round((toDate(b) - toDate(a)) / DAY) + 1;

  /** The state's range as [start, end] ISO days; "" for an open end. */
  function rangeOf(s) {
    const today = config.today;
    switch (s.range) {
      case "7d": return [addDays(today, -6), today];
      case "30d": return [addDays(today, -29), today];
      case "90d": return [addDays(today, -89), today];
      case "month": return [today.slice(0, 8) + "01", today];
      case "year": return [today.slice(0, 5) + "01-01", today];
      case "all": return ["", ""];
      default: return [s.start, s.end];
    }
  }

  /** The range of the same length just before, when the range has two ends. */
  function previousRange([start, end]) {
    if (!start || !end || start > end) return null;
    const length = daysBetween(start, end);
    const prevStart = addDays(start, -length);
    if (prevStart < "1900-01-01") return null;
    return [prevStart, addDays(start, -1)];
  }

  function filtersOf(s, range) {
    const [start, end] = range || rangeOf(s);
    const f = {};
    if (start) f.start_date = start;
    if (end) f.end_date = end;
    if (s.country.length) f.country_codes = s.country;
    if (s.exclude.length) f.exclude_country_codes = s.exclude;
    if (s.author) f.author_username = s.author;
    return f;
  }

  // --- API ------------------------------------------------------------------------------------

  async function request(method, url, body) {
    const headers = { Accept: "application/json", "X-CSRFToken": csrf };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok) {
      let message = data && data.error ? data.error.message : `HTTP ${response.status}`;
      // Say why, not only which field: "start_date: 2025-02-01 is after end_date 2025-01-01".
      const reasons = (data && data.error && data.error.details) || [];
      const why = reasons
        .filter((d) => d && d.reason)
        .map((d) => (d.field ? `${d.field}: ${d.reason}` : d.reason));
      if (why.length) message = `${why.join("; ")}.`;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  const analytics = (endpoint, body) => request("POST", `${config.urls.analytics}${endpoint}/`, body);

  /** The CSV download of an analytics answer: the same filters as a GET query string (lists
   * comma-separated), with ``format=csv``; the session signs it in like the panels' calls. */
  function csvHref(endpoint, f, extra) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries({ ...f, ...extra })) {
      params.set(key, Array.isArray(value) ? value.join(",") : String(value));
    }
    params.set("format", "csv");
    return `${config.urls.analytics}${endpoint}/?${params}`;
  }

  // Each table's CSV: its whole list (the breakdown behind a top list, the top 100 blogs).
  const CSV_LINKS = [
    ["panel-top-blogs", "top/blog", { limit: 100 }],
    ["panel-top-authors", "blog-views/user", { limit: 1000 }],
    ["panel-top-countries", "blog-views/country", { limit: 1000 }],
    ["panel-countries", "blog-views/country", { limit: 1000 }],
  ];

  function csvLinksSet(f) {
    for (const [id, endpoint, extra] of CSV_LINKS) {
      panel(id).querySelector("a.csv").href = csvHref(endpoint, f, extra);
    }
  }

  // --- Panels ---------------------------------------------------------------------------------

  const panel = (id) => document.getElementById(id);

  function setPanelState(el, state, message) {
    el.dataset.state = state;
    el.setAttribute("aria-busy", state === "loading" ? "true" : "false");
    const status = el.querySelector(".status");
    if (status) status.textContent = message || (state === "loading" ? "Loading…" : "");
  }

  function errorText(error) {
    if (error.status === 401 || error.status === 403) return `Not allowed: ${error.message} Sign in again?`;
    return `Could not load: ${error.message}`;
  }

  function field(el, name) {
    return el.querySelector(`[data-field="${name}"]`);
  }

  function changeText(current, previous) {
    if (previous === null || previous === undefined) return { text: "", cls: "" };
    if (previous === 0) return { text: current ? "new against 0 in the previous period" : "0 in the previous period too", cls: "" };
    const pct = ((current - previous) / previous) * 100;
    const sign = pct > 0 ? "+" : pct < 0 ? "−" : "±";
    return {
      text: `${sign}${pf.format(Math.abs(pct))} % vs previous period (${nf.format(previous)})`,
      cls: pct > 0 ? "up" : pct < 0 ? "down" : "",
    };
  }

  function growthText(pct) {
    if (pct === null || pct === undefined) return "no growth figure (no previous bucket with views)";
    const sign = pct > 0 ? "+" : pct < 0 ? "−" : "±";
    return `${sign}${pf.format(Math.abs(pct))} % vs the bucket before`;
  }

  const PERIOD_WORDS = { day: "day", week: "week", month: "month", year: "year" };
  const BUCKET_ADJECTIVE = { day: "daily", week: "weekly", month: "monthly", year: "yearly" };

  /** A bucket is partial when it has not ended at the answer's as_of (it holds today). */
  function partialFlags(rows, asOf) {
    const asOfDay = (asOf || "").slice(0, 10);
    return rows.map((row) => row.period_end >= asOfDay);
  }

  // Series + headline share the performance answer; headline also uses top blogs' total.
  function renderHeadline(el, series, topBlogs, previous) {
    const rows = series.results;
    const total = rows.reduce((sum, row) => sum + row.views, 0);
    field(el, "views").textContent = nf.format(total);
    field(el, "blogs").textContent = nf.format(topBlogs.meta.total);
    const viewsChange = changeText(total, previous ? previous.views : null);
    const blogsChange = changeText(topBlogs.meta.total, previous ? previous.blogs : null);
    const setDelta = (name, change, fallback) => {
      const node = field(el, name);
      node.textContent = change.text || fallback;
      node.className = "delta " + change.cls;
    };
    const noCompare = previous === undefined ? "no previous period to compare with" : "";
    setDelta("views-change", viewsChange, noCompare);
    setDelta("blogs-change", blogsChange, noCompare);

    const word = PERIOD_WORDS[series.meta.granularity] || "bucket";
    const partial = partialFlags(rows, series.meta.as_of);
    const last = rows.length - 1;
    const title = field(el, "last-title");
    const lastViews = field(el, "last-views");
    const growth = field(el, "last-growth");
    growth.className = "delta";
    if (last < 0) {
      title.textContent = "Latest bucket";
      lastViews.textContent = "–";
      growth.textContent = "";
      return;
    }
    // The bucket holding today has just begun: its growth against a whole bucket is no news.
    // Headline the last complete bucket, and say what the partial one holds so far.
    const complete = partial[last] ? last - 1 : last;
    if (complete >= 0) {
      title.textContent = `Last complete ${word}: ${rows[complete].label}`;
      lastViews.textContent = nf.format(rows[complete].views);
      const pct = rows[complete].growth_pct;
      growth.textContent = growthText(pct);
      growth.className = "delta " + (pct > 0 ? "up" : pct < 0 ? "down" : "");
      if (partial[last]) {
        growth.textContent += ` · this ${word} so far (partial): ${nf.format(rows[last].views)}`;
      }
    } else {
      title.textContent = `This ${word} so far: ${rows[last].label}`;
      lastViews.textContent = nf.format(rows[last].views);
      growth.textContent = "partial bucket (it holds today)";
    }
  }

  let chart = null;

  function axisLabel(granularity) {
    return (seconds) => {
      const day = iso(new Date(seconds * 1000));
      if (granularity === "year") return day.slice(0, 4);
      if (granularity === "month") return day.slice(0, 7);
      return day;
    };
  }

  function renderSeries(el, series) {
    const host = el.querySelector(".chart");
    const rows = series.results;
    const partial = partialFlags(rows, series.meta.as_of);
    if (chart) {
      chart.destroy();
      chart = null;
    }
    host.textContent = "";
    const note = el.querySelector(".note");
    note.textContent = "";
    if (!rows.length) return;
    const xs = rows.map((row) => toDate(row.period_start).getTime() / 1000);
    const complete = rows.map((row, i) => (partial[i] ? null : row.views));
    // The partial bucket is drawn dashed, from the last complete one.
    const partialLine = rows.map((row, i) =>
      partial[i] || (i + 1 < rows.length && partial[i + 1]) ? row.views : null,
    );
    const created = rows.map((row) => row.blogs_created);
    const labels = rows.map((row) => row.label);
    const granularity = series.meta.granularity;
    const width = Math.max(280, host.clientWidth || 600);
    const narrow = width < 500;
    const opts = {
      width,
      height: narrow ? 220 : 300,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      cursor: { points: { size: 8 }, drag: { x: false, y: false } },
      legend: { live: true },
      scales: { x: { time: true }, views: { range: (u, min, max) => [0, Math.max(1, max) * 1.08] }, blogs: { range: (u, min, max) => [0, Math.max(1, max) * 3] } },
      axes: [
        { values: (u, splits) => splits.map(axisLabel(granularity)), space: narrow ? 70 : 90 },
        { scale: "views", values: (u, splits) => splits.map((v) => nf.format(v)), size: 64 },
        { scale: "blogs", side: 1, grid: { show: false }, values: (u, splits) => splits.map((v) => (Number.isInteger(v) ? nf.format(v) : "")), size: 40 },
      ],
      series: [
        { label: granularity, value: (u, v, si, idx) => (idx === null || idx === undefined ? "–" : labels[idx]) },
        { label: "Views", scale: "views", stroke: "#2563eb", width: 2, fill: "rgba(37,99,235,0.08)", value: (u, v) => (v === null ? "–" : nf.format(v)), points: { show: rows.length <= 60 } },
        { label: "Views, partial (so far)", scale: "views", stroke: "#2563eb", width: 2, dash: [6, 5], value: (u, v) => (v === null ? "–" : nf.format(v)), points: { show: true, fill: "#fff" } },
        { label: "Blogs created", scale: "blogs", stroke: "#d97706", fill: "rgba(217,119,6,0.35)", width: 1, paths: uPlot.paths.bars({ size: [0.5, 24] }), value: (u, v) => (v === null ? "–" : nf.format(v)), points: { show: false } },
      ],
    };
    chart = new uPlot(opts, [xs, complete, partialLine, created], host);
    const anyPartial = partial.some(Boolean);
    note.textContent =
      `${nf.format(rows.length)} ${BUCKET_ADJECTIVE[granularity] || granularity} buckets${series.meta.granularity_auto ? " (chosen automatically)" : ""}. ` +
      (anyPartial ? `The last one holds today and is partial (dashed). ` : "") +
      `Hover for values; blogs created are the bars (right axis).`;
  }

  window.addEventListener("resize", () => {
    if (!chart) return;
    const host = document.getElementById("series-chart");
    chart.setSize({ width: Math.max(280, host.clientWidth), height: host.clientWidth < 500 ? 220 : 300 });
  });

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    return td;
  }

  const countryLabel = (row) => `${row.country_name} (${row.country_code})`;

  /** Rows into a panel's table; ``columns`` turn a row (and its rank) into cells. */
  function fillTable(el, rows, columns, { append = false, startRank = 1 } = {}) {
    const body = el.querySelector("tbody");
    if (!append) body.textContent = "";
    rows.forEach((row, i) => {
      const tr = document.createElement("tr");
      for (const [value, cls] of columns(row, startRank + i)) tr.appendChild(cell(value, cls));
      body.appendChild(tr);
    });
    return body.children.length;
  }

  /** A top list: the first page from ``top/<x>``, the next ones from a breakdown endpoint
   * (``blog-views/<x>``, limit/offset) or, for blogs (no breakdown), a larger ``top`` limit. */
  function topList(id, { top, breakdown, columns, noun }) {
    const el = panel(id);
    const button = el.querySelector(".more-button");
    let filters = null;
    let shown = 0;
    let total = 0;
    let generation = 0;

    const showCount = () => {
      el.querySelector(".count").textContent = total ? `Showing ${nf.format(shown)} of ${nf.format(total)} ${noun}.` : "";
      const limitReached = !breakdown && shown >= 100;
      button.hidden = shown >= total || limitReached;
    };

    async function more() {
      const mine = generation;
      button.disabled = true;
      button.textContent = "Loading…";
      try {
        let rows;
        if (breakdown) {
          const answer = await analytics(breakdown, { ...filters, limit: PAGE, offset: shown });
          rows = answer.results;
          if (mine !== generation) return;
          shown = fillTable(el, rows, columns, { append: true, startRank: shown + 1 });
          total = answer.meta.total;
        } else {
          const answer = await analytics(top, { ...filters, limit: Math.min(100, shown + PAGE) });
          if (mine !== generation) return;
          rows = answer.results.slice(shown);
          shown = fillTable(el, rows, columns, { append: true, startRank: shown + 1 });
        }
        showCount();
      } catch (error) {
        if (mine === generation) el.querySelector(".count").textContent = errorText(error);
      } finally {
        button.disabled = false;
        button.textContent = "Show more";
      }
    }
    button.addEventListener("click", more);

    return {
      el,
      /** Start loading for ``f``; resolves with the first page's answer (or rejects). */
      load(f) {
        this.use(f);
        return analytics(top, { ...f, limit: PAGE });
      },
      /** Show ``f``'s list from an answer fetched elsewhere (``render``); "show more" pages on. */
      use(f) {
        generation += 1;
        filters = f;
      },
      render(answer) {
        shown = fillTable(el, answer.results, columns);
        total = answer.meta.total;
        showCount();
        return answer.results.length;
      },
    };
  }

  const topBlogs = topList("panel-top-blogs", {
    top: "top/blog",
    breakdown: null,
    noun: "blogs with views",
    columns: (row, rank) => [[nf.format(rank), "num rank"], [row.title, "title"], [row.username], [nf.format(row.views), "num"]],
  });
  const topAuthors = topList("panel-top-authors", {
    top: "top/user",
    breakdown: "blog-views/user",
    noun: "authors",
    columns: (row, rank) => [[nf.format(rank), "num rank"], [row.username], [nf.format(row.blogs), "num"], [nf.format(row.views), "num"]],
  });
  const topCountries = topList("panel-top-countries", {
    top: "top/country",
    breakdown: "blog-views/country",
    noun: "countries",
    columns: (row, rank) => [[nf.format(rank), "num rank"], [countryLabel(row)], [nf.format(row.blogs), "num"], [nf.format(row.views), "num"]],
  });

  // --- World map (world-atlas TopoJSON, drawn as SVG in an equirectangular projection) -----

  let mapShapes = null;
  // Fetched at once, beside the first API calls, not after the countries' answer.
  const mapTopology = fetch(config.urls.map, { credentials: "same-origin" }).then((response) => {
    if (!response.ok) throw new Error(`map: HTTP ${response.status}`);
    return response.json();
  });
  mapTopology.catch(() => null); // reported by the countries panel

  async function mapLoad() {
    if (mapShapes) return mapShapes;
    const topology = await mapTopology;
    performance.mark("dash:map:start");
    const world = topojson.feature(topology, topology.objects.countries);
    const W = 960;
    const H = 440;
    const x = (lon) => ((lon + 180) / 360) * W;
    const y = (lat) => ((84 - lat) / 142) * H; // 84 N to 58 S: Antarctica left out
    const ring = (points) => {
      let d = "";
      let prev = null;
      for (const [lon, lat] of points) {
        // A jump across the antimeridian starts a new piece instead of a line across the map.
        const jump = prev !== null && Math.abs(lon - prev) > 180;
        d += `${d === "" || jump ? "M" : "L"}${x(lon).toFixed(1)},${y(lat).toFixed(1)}`;
        prev = lon;
      }
      return d + "Z";
    };
    mapShapes = world.features
      .filter((f) => f.id !== "010" && f.geometry)
      .map((f) => {
        const polygons = f.geometry.type === "Polygon" ? [f.geometry.coordinates] : f.geometry.coordinates;
        const d = polygons.map((polygon) => polygon.map(ring).join("")).join("");
        return { code: config.numeric[f.id] || null, name: f.properties.name, d };
      });
    performance.measure("dash:map:shapes", "dash:map:start");
    return mapShapes;
  }

  const MAP_COLOURS = ["#dbeafe", "#93c5fd", "#60a5fa", "#2563eb", "#1e3a8a"];

  function renderMap(host, shapes, rows) {
    const started = performance.now();
    const views = new Map(rows.map((row) => [row.country_code, row]));
    const max = Math.max(1, ...rows.map((row) => row.views));
    const svgNS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNS, "svg");
    svg.setAttribute("viewBox", "0 0 960 440");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", "Views by country, darker is more (log scale)");
    for (const shape of shapes) {
      const path = document.createElementNS(svgNS, "path");
      path.setAttribute("d", shape.d);
      const row = shape.code ? views.get(shape.code) : null;
      // Log scale: a few countries take most views, so a linear scale would leave the rest white.
      const level = row ? Math.min(4, Math.floor((Math.log(row.views + 1) / Math.log(max + 1)) * 5)) : -1;
      path.setAttribute("fill", level < 0 ? "#f1f5f9" : MAP_COLOURS[level]);
      path.setAttribute("stroke", "#94a3b8");
      path.setAttribute("stroke-width", "0.4");
      const title = document.createElementNS(svgNS, "title");
      title.textContent = row ? `${countryLabel(row)}: ${nf.format(row.views)} views` : `${shape.name}: no views`;
      path.appendChild(title);
      svg.appendChild(path);
    }
    host.textContent = "";
    host.appendChild(svg);
    const legend = document.createElement("figcaption");
    legend.className = "muted small";
    legend.textContent = `Darker = more views (log scale; the darkest ≈ ${nf.format(max)}). Hover a country for its figure.`;
    host.appendChild(legend);
    performance.measure("dash:map:draw", { start: started });
  }

  // --- Loading every panel ----------------------------------------------------------------

  let state = stateFromUrl();
  let generation = 0;

  /** Run ``work`` for a panel: loading state first, then ready, empty or error. */
  async function panelRun(el, name, work, mine) {
    setPanelState(el, "loading");
    try {
      const filled = await work();
      if (mine !== generation) return;
      if (filled === 0) setPanelState(el, "empty", "No views match these filters.");
      else setPanelState(el, "ready");
    } catch (error) {
      if (mine !== generation) return;
      setPanelState(el, "error", errorText(error));
    }
    performance.mark(`dash:panel:${name}:${mine}`);
  }

  async function loadAll(reason) {
    generation += 1;
    const mine = generation;
    root.dataset.state = "loading";
    root.setAttribute("aria-busy", "true");
    performance.mark(`dash:start:${mine}`);
    const range = rangeOf(state);
    const f = filtersOf(state, range);
    const previous = previousRange(range);
    document.getElementById("range-text").textContent = range[0] || range[1]
      ? `${range[0] || "earliest"} to ${range[1] || "today"}${previous ? `, compared with ${previous[0]} to ${previous[1]}` : ""}`
      : "All time";

    csvLinksSet(f);
    const seriesBody = { ...f };
    if (state.period !== "auto") seriesBody.compare_period = state.period;
    const series = analytics("performance", seriesBody);
    const blogsFirst = topBlogs.load(f);
    // The change against the previous period: the same API for the range of the same length
    // just before (two small calls; exact, like every other number here).
    const prior = previous
      ? Promise.all([
          analytics("performance", { ...filtersOf(state, previous), compare_period: "year" }),
          analytics("top/blog", { ...filtersOf(state, previous), limit: 1 }),
        ]).then(([p, b]) => ({ views: p.results.reduce((s, r) => s + r.views, 0), blogs: b.meta.total }))
      : Promise.resolve(undefined);
    const countries = analytics("blog-views/country", { ...f, limit: 1000 });

    const work = [
      panelRun(panel("panel-series"), "series", async () => {
        const answer = await series;
        if (mine === generation) renderSeries(panel("panel-series"), answer);
        return answer.results.some((r) => r.views > 0) ? answer.results.length : 0;
      }, mine),
      panelRun(panel("panel-headline"), "headline", async () => {
        const [answer, blogs, before] = await Promise.all([series, blogsFirst, prior.catch(() => null)]);
        if (mine === generation) renderHeadline(panel("panel-headline"), answer, blogs, before);
        return 1;
      }, mine),
      panelRun(topBlogs.el, "top-blogs", async () => {
        const answer = await blogsFirst;
        return mine === generation ? topBlogs.render(answer) : 0;
      }, mine),
      panelRun(topAuthors.el, "top-authors", async () => {
        const answer = await topAuthors.load(f);
        return mine === generation ? topAuthors.render(answer) : 0;
      }, mine),
      panelRun(topCountries.el, "top-countries", async () => {
        // The breakdown's first rows are the top countries (same order: views, then code), so
        // the countries' one answer fills both panels.
        topCountries.use(f);
        const answer = await countries;
        const first = { results: answer.results.slice(0, PAGE), meta: answer.meta };
        return mine === generation ? topCountries.render(first) : 0;
      }, mine),
      panelRun(panel("panel-countries"), "countries", async () => {
        const el = panel("panel-countries");
        const answer = await countries;
        if (mine !== generation) return 0;
        const total = answer.results.reduce((s, r) => s + r.views, 0);
        const filled = fillTable(el, answer.results, (row) => [
          [countryLabel(row)],
          [nf.format(row.blogs), "num"],
          [nf.format(row.views), "num"],
          [total ? `${pf.format((row.views / total) * 100)} %` : "–", "num"],
        ]);
        try {
          const shapes = await mapLoad();
          if (mine === generation) renderMap(el.querySelector(".map"), shapes, answer.results);
        } catch (error) {
          el.querySelector(".map").textContent = `The map could not be drawn: ${error.message}`;
        }
        return filled;
      }, mine),
    ];
    if (config.staff) work.push(panelRun(panel("panel-rollups"), "rollups", rollupsStatusLoad, mine));

    await Promise.all(work);
    if (mine !== generation) return;
    performance.mark(`dash:ready:${mine}`);
    if (reason === "load") {
      performance.measure("dash:load", { start: 0, end: `dash:ready:${mine}` });
    } else {
      performance.measure("dash:filter", `dash:start:${mine}`, `dash:ready:${mine}`);
    }
    root.dataset.state = "ready";
    root.dataset.generation = String(mine);
    root.setAttribute("aria-busy", "false");
  }

  // --- Rollups (staff) ---------------------------------------------------------------------

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 120) return `${pf.format(seconds)} s`;
    if (seconds < 7200) return `${pf.format(seconds / 60)} min`;
    return `${pf.format(seconds / 3600)} h`;
  }

  async function rollupsStatusLoad() {
    const el = panel("panel-rollups");
    const status = await request("GET", config.urls.rollupsStatus);
    field(el, "pending").textContent = nf.format(status.pending_views);
    field(el, "lag").textContent = duration(status.lag_seconds);
    field(el, "last-run").textContent = status.last_run_at ? status.last_run_at.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") : "never";
    field(el, "last-duration").textContent =
      status.last_run_duration_ms === null ? "–" : `${nf.format(status.last_run_duration_ms)} ms`;
    return 1;
  }

  function rebuildForm() {
    const form = document.getElementById("rebuild-form");
    if (!form) return;
    const job = document.getElementById("rebuild-job");
    const bar = document.getElementById("rebuild-progress");
    const button = form.querySelector("button[type=submit]");
    const show = (data, message) => {
      job.hidden = false;
      field(job, "job-id").textContent = data.job_id || "";
      field(job, "job-state").textContent = data.state || "";
      job.dataset.state = data.state || "";
      if (typeof data.progress === "number") bar.value = Math.round(data.progress * 100);
      if (data.state === "done") bar.value = 100;
      bar.textContent = `${bar.value} %`;
      field(job, "job-message").textContent = message || "";
    };
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const body = {};
      const start = document.getElementById("r-start").value;
      const end = document.getElementById("r-end").value;
      if (start) body.start_date = start;
      if (end) body.end_date = end;
      button.disabled = true;
      bar.value = 0;
      try {
        const accepted = await request("POST", config.urls.rollupsRebuild, body);
        show(accepted, accepted.created ? "Queued." : "A job for this range was already queued or running; following it.");
        const url = `${config.urls.rollupsRebuild.replace(/rebuild\/$/, "jobs/")}${accepted.job_id}/`;
        for (;;) {
          const data = await request("GET", url);
          if (data.state === "done") {
            show(data, `Done: ${nf.format(data.views_rebuilt || 0)} views rebuilt in ${nf.format(data.duration_ms || 0)} ms.`);
            break;
          }
          if (data.state === "failed") {
            show(data, `Failed: ${data.error}`);
            break;
          }
          show(data, data.state === "queued" ? "Waiting for a worker…" : `${bar.value} %`);
          await new Promise((resolve) => setTimeout(resolve, 500));
        }
        loadAll("rebuild");
      } catch (error) {
        show({ state: "error" }, errorText(error));
      } finally {
        button.disabled = false;
      }
    });
  }

  // --- Filters ------------------------------------------------------------------------------

  const controls = {
    range: document.getElementById("f-range"),
    start: document.getElementById("f-start"),
    end: document.getElementById("f-end"),
    author: document.getElementById("f-author"),
    period: document.getElementById("f-period"),
  };

  function chips(param) {
    const list = document.getElementById(`f-${param}-chips`);
    list.textContent = "";
    for (const code of state[param]) {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "chip";
      button.dataset.code = code;
      button.setAttribute("aria-label", `Remove ${countryNames.get(code)} (${code})`);
      button.textContent = `${countryNames.get(code)} (${code}) ×`;
      button.addEventListener("click", () => {
        state = { ...state, [param]: state[param].filter((c) => c !== code) };
        applyState();
        document.getElementById(`f-${param}`).focus();
      });
      li.appendChild(button);
      list.appendChild(li);
    }
  }

  function showState() {
    controls.range.value = state.range;
    const custom = state.range === "custom";
    document.getElementById("custom-range").hidden = !custom;
    document.getElementById("custom-range-end").hidden = !custom;
    const [start, end] = rangeOf(state);
    controls.start.value = custom ? state.start : start;
    controls.end.value = custom ? state.end : end;
    controls.author.value = state.author;
    controls.period.value = state.period;
    chips("country");
    chips("exclude");
  }

  function applyState() {
    const url = urlFromState(state);
    if (url !== location.pathname + location.search) history.pushState(null, "", url);
    showState();
    loadAll("filter");
  }

  /** A country typed or picked: "Name (CC)", a code, or a name. */
  function countryCode(text) {
    const value = text.trim();
    const match = /\(([A-Za-z]{2})\)\s*$/.exec(value);
    if (match && countryNames.has(match[1].toUpperCase())) return match[1].toUpperCase();
    if (countryNames.has(value.toUpperCase())) return value.toUpperCase();
    for (const [code, name] of countryNames) if (name.toLowerCase() === value.toLowerCase()) return code;
    return null;
  }

  for (const param of ["country", "exclude"]) {
    const input = document.getElementById(`f-${param}`);
    const add = () => {
      const code = countryCode(input.value);
      if (!code) return false;
      input.value = "";
      if (!state[param].includes(code)) {
        state = { ...state, [param]: [...state[param], code] };
        applyState();
      }
      return true;
    };
    // A pick from the list fires "input" with the whole value; Enter adds what was typed.
    input.addEventListener("input", (event) => {
      if (event.inputType === "insertReplacementText" || event.inputType === undefined) add();
    });
    input.addEventListener("change", add);
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        if (!add() && input.value.trim()) input.setCustomValidity("Unknown country: pick one from the list.");
        input.reportValidity();
        input.setCustomValidity("");
      }
    });
  }

  controls.range.addEventListener("change", () => {
    const range = controls.range.value;
    if (range === "custom") {
      // Start from the range shown, so that "Custom" edits it rather than clearing it.
      const [start, end] = rangeOf(state);
      state = { ...state, range, start, end };
    } else {
      state = { ...state, range, start: "", end: "" };
    }
    applyState();
  });
  for (const name of ["start", "end"]) {
    controls[name].addEventListener("change", () => {
      const value = controls[name].value.trim();
      const valid = !value || /^\d{4}-\d{2}-\d{2}$/.test(value);
      controls[name].setCustomValidity(valid ? "" : "A day as YYYY-MM-DD (UTC), or empty for an open end.");
      if (!valid) {
        controls[name].reportValidity();
        return;
      }
      state = { ...state, [name]: value };
      applyState();
    });
  }
  controls.author.addEventListener("change", () => {
    state = { ...state, author: controls.author.value.trim() };
    applyState();
  });
  controls.period.addEventListener("change", () => {
    state = { ...state, period: controls.period.value };
    applyState();
  });
  document.getElementById("filters").addEventListener("submit", (event) => event.preventDefault());
  window.addEventListener("popstate", () => {
    state = stateFromUrl();
    showState();
    loadAll("filter");
  });

  window.dashboard = {
    get state() {
      return { ...state };
    },
    filtersOf: () => filtersOf(state),
    timings: () =>
      performance.getEntriesByType("measure").filter((m) => m.name.startsWith("dash:")).map((m) => ({ name: m.name, ms: m.duration })),
  };

  showState();
  rebuildForm();
  loadAll("load");
})();
