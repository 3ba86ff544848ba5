// The Risk-O-Meter: upload a CSV, score it with POST /prediction, show clients sorted by risk;
// or open the call list (GET /calllist): whom to call first, and why. Both tables are paged.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const PAGE_ROWS = 50;  // a page the eye can take in; 1,000 rows in one table made a 35,000-pixel page
  const tokenRequired = document.body.dataset.tokenRequired === "yes";
  let lastResult = null;
  let lastCallList = null;
  // The version /model last described (badge, verdict, warnings, bands): asked again once a token is
  // accepted, and when an answer comes from another version (one deployed while the page stayed open).
  let loadedVersion = null;

  function headers() {
    const token = sessionStorage.getItem("riskToken") || $("api-token").value.trim();
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function rememberToken() {
    const token = $("api-token").value.trim();
    if (token) sessionStorage.setItem("riskToken", token);
  }

  function showError(message, box) {
    box = box || $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  async function readJson(response) {
    try { return await response.json(); } catch (e) { return { message: response.statusText }; }
  }

  // The API's 401 speaks to programs (an Authorization header); the page speaks to the person using it.
  function tokenRefused(retry) {
    $("token-row").hidden = false;
    const entered = $("api-token").value.trim() || sessionStorage.getItem("riskToken");
    sessionStorage.removeItem("riskToken");  // a refused token is not sent again
    return entered
      ? "The API token entered was not accepted. Enter the API token you were given, then " + retry + " again."
      : "Enter the API token you were given in the API token box, then " + retry + " again.";
  }

  // ------------------------------------------------------------------------- paging

  // Rows of one table shown PAGE_ROWS at a time, with the pager bars (above and below) kept in step.
  function makePager(name, renderRow) {
    const body = document.querySelector("#" + name + "-table tbody");
    const bars = Array.from(document.querySelectorAll('[data-pager="' + name + '"]'));
    let items = [];
    let page = 0;
    const pages = () => Math.max(1, Math.ceil(items.length / PAGE_ROWS));
    function draw() {
      const start = page * PAGE_ROWS;
      const shown = items.slice(start, start + PAGE_ROWS);
      body.replaceChildren(...shown.map((item, i) => renderRow(item, start + i)));
      const label = "Page " + (page + 1) + " of " + pages() + " · rows " + (items.length ? start + 1 : 0) +
        "–" + (start + shown.length) + " of " + items.length;
      bars.forEach((bar) => {
        bar.hidden = items.length <= PAGE_ROWS;
        bar.querySelector(".pager-label").textContent = label;
        bar.querySelector(".pager-prev").disabled = page === 0;
        bar.querySelector(".pager-next").disabled = page >= pages() - 1;
      });
    }
    function go(step, bar) {
      const target = Math.min(pages() - 1, Math.max(0, page + step));
      if (target === page) return;
      page = target;
      draw();
      if (bar === bars[bars.length - 1]) body.parentElement.scrollIntoView({ block: "start" });  // from the bottom bar
    }
    bars.forEach((bar) => {
      bar.querySelector(".pager-prev").addEventListener("click", () => go(-1, bar));
      bar.querySelector(".pager-next").addEventListener("click", () => go(1, bar));
    });
    return { show(newItems) { items = newItems; page = 0; draw(); } };
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;  // text only: values from files are never parsed as HTML
    if (className) td.className = className;
    return td;
  }

  function bandCell(band) {
    const td = document.createElement("td");
    const pill = document.createElement("span");
    pill.className = "pill " + band;
    pill.textContent = band;
    td.appendChild(pill);
    return td;
  }

  // ------------------------------------------------------------------------- the model badge

  async function loadModel() {
    const response = await fetch("/model", { headers: headers() });
    if (response.status === 401) {
      $("model-version").textContent = "enter your API token";
      $("model-version").title = tokenRefused("score the file");
      loadedVersion = null;
      return;
    }
    const body = await readJson(response);
    if (!response.ok) { $("model-version").textContent = "none"; showError(body.message || "no model is being served"); return; }
    loadedVersion = body.model_version;
    $("model-version").textContent = body.model_version;
    $("model-version").title = "";
    showModelTerms(body);
    showVerdict(body);
  }

  function fillList(list, texts) {
    list.replaceChildren(...texts.map((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      return li;
    }));
    list.hidden = !texts.length;
  }

  // The training's own verdict and warnings, beside the badge (older versions have none).
  function showVerdict(body) {
    const verdict = $("model-verdict");
    verdict.hidden = !body.uninformative;
    verdict.textContent = body.uninformative ? "no better than chance" : "";
    verdict.title = body.verdict || "";
    fillList($("model-warnings"), body.warnings || []);
  }

  // The model's name, decision threshold and bands, from /model or from a /prediction answer (both give them).
  function showModelTerms(body) {
    $("model-name").textContent = body.model + " · decision threshold " + body.threshold;
    showBands(body.bands);
  }

  // The legend follows the model being served: its threshold moves with each version. Only the legend's
  // own spans: rows are classed band-amber/band-red, and /model may answer after a table was drawn.
  function showBands(bands) {
    if (!bands || bands.amber === null || bands.amber === undefined) return;
    const pct = (v) => (100 * v).toFixed(1);
    const legend = $("band-legend");
    legend.querySelectorAll(".legend-amber").forEach((el) => { el.textContent = pct(bands.amber); });
    legend.querySelectorAll(".legend-red").forEach((el) => { el.textContent = pct(bands.red); });
    // A page served before the first model was deployed shows the thresholds once one is.
    $("legend-no-model").hidden = true;
    $("legend-thresholds").hidden = false;
    $("band-source-configured").hidden = bands.source !== "configured";
    $("band-source-derived").hidden = bands.source === "configured";
  }

  // Rounded down, so that a risk just under a band's threshold never shows as the threshold itself.
  function percent(risk) {
    return (Math.floor(1000 * risk) / 10).toFixed(1) + "%";
  }

  function clientName(row, idColumns, fallback) {
    const ids = idColumns.map((name) => row[name]).filter((v) => v !== null && v !== undefined && v !== "");
    return ids.length ? ids.join(" / ") : fallback;
  }

  // ------------------------------------------------------------------------- the upload view

  let resultsIdColumns = [];

  function resultRow(row, index) {
    const tr = document.createElement("tr");
    tr.className = "band-" + row.band;
    tr.appendChild(cell(String(index + 1), "num"));
    tr.appendChild(cell(clientName(row, resultsIdColumns, "row " + (row.row + 1))));
    tr.appendChild(cell(percent(row.risk), "num"));
    const meter = document.createElement("td");
    meter.innerHTML = '<div class="meter"><span></span></div>';
    const bar = meter.querySelector("span");
    bar.className = row.band;
    bar.style.width = Math.max(1, 100 * row.risk).toFixed(1) + "%";
    tr.appendChild(meter);
    tr.appendChild(bandCell(row.band));
    tr.appendChild(cell(row.prediction === 1 ? "likely to leave" : "likely to stay"));
    return tr;
  }

  const resultsPager = makePager("results", resultRow);

  function render(result) {
    const idColumns = Object.keys(result.predictions[0] || {}).filter((k) => !["row", "prediction", "risk", "band"].includes(k));
    const sorted = result.predictions.slice().sort((a, b) => b.risk - a.risk || a.row - b.row);
    resultsIdColumns = idColumns;
    resultsPager.show(sorted);
    $("model-version").textContent = result.model_version;
    // The rows were cut by this answer's model: a page open while another version was deployed (/model is
    // asked once) must not name the earlier one's threshold and bands beside them.
    showModelTerms(result);
    $("summary-text").textContent = result.rows + " clients scored by model " + result.model_version + ", riskiest first.";
    ["red", "amber", "green"].forEach((b) => { $("count-" + b).textContent = result.band_counts[b] + " " + b; });
    const notes = [];
    Object.entries(result.unseen_categories).forEach(([column, count]) => notes.push(count + " value(s) of " + column + " were never seen in training; scored as unknown."));
    Object.entries(result.missing_values).forEach(([column, count]) => notes.push(count + " missing value(s) in " + column + "; the model filled them in."));
    if (result.ignored_columns && result.ignored_columns.length) {
      const more = result.ignored_columns_not_named ? " and " + result.ignored_columns_not_named + " more" : "";
      notes.push("Ignored, as the model does not use them: " + result.ignored_columns.join(", ") + more + ".");
    }
    fillList($("notes"), notes);
    $("results").hidden = false;
    lastResult = { result: result, sorted: sorted, idColumns: idColumns };
  }

  function csvCell(value) {
    let text = value === null || value === undefined ? "" : String(value);
    if (/^[=+\-@\t\r]/.test(text)) text = "'" + text;  // no formulas when opened in a spreadsheet
    return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
  }

  function saveBlob(blob, name) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
  }

  function download() {
    if (!lastResult) return;
    const { result, sorted, idColumns } = lastResult;
    const header = ["rank", "row"].concat(idColumns, ["risk", "band", "prediction", "model_version"]);
    const lines = [header.join(",")];
    sorted.forEach((row, index) => {
      const values = [index + 1, row.row + 1].concat(idColumns.map((c) => row[c]), [row.risk, row.band, row.prediction, result.model_version]);
      lines.push(values.map(csvCell).join(","));
    });
    saveBlob(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }), "scored_clients_" + result.model_version + ".csv");
  }

  async function score(event) {
    event.preventDefault();
    const file = $("csv-file").files[0];
    if (!file) { showError("Choose a CSV file first."); return; }
    rememberToken();
    const data = new FormData();
    data.append("file", file);
    $("score-button").disabled = true;
    showError("");
    try {
      const response = await fetch("/prediction", { method: "POST", body: data, headers: headers() });
      const body = await readJson(response);
      if (response.status === 401) { showError(tokenRefused("score the file")); return; }
      if (!response.ok) { showError("Could not score the file: " + (body.message || response.statusText)); return; }
      render(body);
      if (body.model_version !== loadedVersion) loadModel();
    } catch (e) {
      showError("The server did not answer: " + e.message);
    } finally {
      $("score-button").disabled = false;
    }
  }

  // ------------------------------------------------------------------------- the call list view

  const CHANGE_WORDS = { new: "new on the list", same: "same place" };

  function changeText(client) {
    if (client.change === "up") return "▲ up from " + client.previous_rank;
    if (client.change === "down") return "▼ down from " + client.previous_rank;
    return CHANGE_WORDS[client.change] || (client.change || "");
  }

  // The run writes a version it cannot explain with blank reasons and a method saying "none: why".
  function listHasReasons(list) {
    return Boolean(list && list.method && !/^none\b/.test(list.method));
  }

  function callListRow(client) {
    const ids = lastCallList ? lastCallList.id_columns : [];
    const tr = document.createElement("tr");
    tr.className = "band-" + client.band;
    tr.appendChild(cell(String(client.rank), "num"));
    tr.appendChild(cell(clientName(client, ids, "rank " + client.rank)));
    tr.appendChild(cell(percent(client.risk), "num"));
    tr.appendChild(bandCell(client.band));
    const why = document.createElement("td");
    if (client.reasons.length) {
      const list = document.createElement("ul");
      list.className = "reasons";
      fillList(list, client.reasons);
      why.appendChild(list);
    } else {  // blank: no feature raises the risk, or (method "none: ...") this list was written without reasons
      why.textContent = listHasReasons(lastCallList)
        ? "no feature raises this client's risk above the typical client's" : "no reasons in this list";
      why.className = "muted";
    }
    tr.appendChild(why);
    tr.appendChild(cell(changeText(client), "change change-" + client.change));
    return tr;
  }

  const callListPager = makePager("calllist", callListRow);

  function count(number, one, many) {
    return number.toLocaleString("en") + " " + (number === 1 ? one : many);
  }

  function callListFacts(list) {
    const facts = [];
    if (list.flagged !== null && list.flagged !== undefined) {
      facts.push(count(list.flagged, "client is", "clients are") + " flagged by the model; " +
        count(list.flagged_beyond_budget || 0, "flagged client falls", "flagged clients fall") + " beyond the budget of " +
        count(list.contact_budget, "call", "calls") + ".");
    }
    if (typeof list.expected_positives_reached === "number") {
      facts.push("Calling the first " + count(list.contact_budget, "client", "clients") + " reaches " +
        (100 * list.expected_positives_reached).toFixed(1) + "% of the clients the model expects to leave (from its risks).");
    }
    const changes = { new: 0, up: 0, down: 0, same: 0 };
    list.clients.forEach((c) => { if (c.change in changes) changes[c.change] += 1; });
    if (list.previous) {
      facts.push("Since the previous list (" + list.previous + "): " + changes.new + " new, " + changes.up + " up, " +
        changes.down + " down, " + changes.same + " in the same place among these " + count(list.clients.length, "client", "clients") + ".");
    } else {
      facts.push("This is the first list: every client on it is new.");
    }
    if (list.method) facts.push("Why: " + list.method + ".");
    if (list.current_version && list.current_version !== list.model_version) {
      facts.push("The API now serves " + list.current_version + "; the next run of fullprocess.py writes its list.");
    }
    return facts;
  }

  // "2026-12-07T09:00:00+00:00" as "2026-12-07 09:00 UTC"; anything else as given.
  function when(stamp) {
    const match = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d)(:\d\d(\.\d+)?)?(\+00:00|Z)$/.exec(stamp || "");
    return match ? match[1] + " " + match[2] + " UTC" : String(stamp);
  }

  function showCallList(list) {
    lastCallList = list;
    fillList($("calllist-warnings"), list.warnings || []);
    $("calllist-summary").textContent = "The " + count(list.clients.length, "client", "clients") + " to call first, of " +
      Number(list.rows || list.shown).toLocaleString("en") + ", riskiest first: model " + list.model_version + ", scored " + when(list.scored_at) + ".";
    fillList($("calllist-facts"), callListFacts(list));
    callListPager.show(list.clients);
    $("calllist").hidden = false;
    $("calllist-load").textContent = "Reload the call list";
  }

  async function loadCallList() {
    const box = $("calllist-error");
    rememberToken();
    showError("", box);
    $("calllist-loading").hidden = false;
    try {
      const response = await fetch("/calllist", { headers: headers() });
      const body = await readJson(response);
      if (response.status === 401) { showError(tokenRefused("open the call list"), box); return; }
      if (!response.ok) { $("calllist").hidden = true; showError(body.message || response.statusText, box); return; }
      showCallList(body);
    } catch (e) {
      showError("The server did not answer: " + e.message, box);
    } finally {
      $("calllist-loading").hidden = true;
    }
  }

  // The file as the API keeps it, fetched with the token (a plain link could not send it).
  async function downloadCallList() {
    const box = $("calllist-error");
    try {
      const response = await fetch("/calllist.csv", { headers: headers() });
      if (response.status === 401) { showError(tokenRefused("download the call list"), box); return; }
      if (!response.ok) { showError("Could not download the call list: " + ((await readJson(response)).message || response.statusText), box); return; }
      const named = /filename="?([^";]+)"?/.exec(response.headers.get("Content-Disposition") || "");
      saveBlob(await response.blob(), named ? named[1] : "calllist.csv");
    } catch (e) {
      showError("The server did not answer: " + e.message, box);
    }
  }

  // ------------------------------------------------------------------------- the views

  function showView() {
    const callList = location.hash === "#calllist";
    $("upload-view").hidden = callList;
    $("calllist-view").hidden = !callList;
    $("tab-upload").toggleAttribute("aria-current", !callList);
    $("tab-calllist").toggleAttribute("aria-current", callList);
    if (callList) loadCallList();  // each visit: the list may have been replaced since
  }

  $("token-row").hidden = !tokenRequired;
  $("upload-form").addEventListener("submit", score);
  $("download-button").addEventListener("click", download);
  $("calllist-download").addEventListener("click", downloadCallList);
  $("calllist-load").addEventListener("click", () => { loadCallList(); if (loadedVersion === null) loadModel(); });
  // Enter in the token box does what the view's button does (it sat in the upload form before the views).
  $("api-token").addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    event.preventDefault();
    if ($("calllist-view").hidden) $("upload-form").requestSubmit(); else $("calllist-load").click();
  });
  window.addEventListener("hashchange", showView);
  showView();
  loadModel();
})();
