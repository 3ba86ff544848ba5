// The Risk-O-Meter: upload a CSV, score it with POST /prediction, show clients sorted by risk.
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const tokenRequired = document.body.dataset.tokenRequired === "yes";
  let lastResult = null;
  let modelLoaded = false;  // the badge, model name and bands come from /model: again once a token is accepted

  function headers() {
    const token = sessionStorage.getItem("riskToken") || $("api-token").value.trim();
    return token ? { Authorization: "Bearer " + token } : {};
  }

  function showError(message) {
    const box = $("error");
    box.textContent = message;
    box.hidden = !message;
  }

  async function readJson(response) {
    try { return await response.json(); } catch (e) { return { message: response.statusText }; }
  }

  // The API's 401 speaks to programs (an Authorization header); the page speaks to the person using it.
  function tokenRefused() {
    $("token-row").hidden = false;
    const entered = $("api-token").value.trim() || sessionStorage.getItem("riskToken");
    sessionStorage.removeItem("riskToken");  // a refused token is not sent again
    return entered
      ? "The API token entered was not accepted. Enter the API token you were given, then score the file again."
      : "Enter the API token you were given in the API token box, then score the file again.";
  }

  async function loadModel() {
    const response = await fetch("/model", { headers: headers() });
    if (response.status === 401) {
      $("model-version").textContent = "enter your API token";
      $("model-version").title = tokenRefused();
      modelLoaded = false;
      return;
    }
    const body = await readJson(response);
    if (!response.ok) { $("model-version").textContent = "none"; showError(body.message || "no model is being served"); return; }
    modelLoaded = true;
    $("model-version").textContent = body.model_version;
    $("model-version").title = "";
    $("model-name").textContent = body.model + " · decision threshold " + body.threshold;
    showVerdict(body);
    showBands(body.bands);
  }

  // The training's own verdict and warnings, beside the badge (older versions have none).
  function showVerdict(body) {
    const verdict = $("model-verdict");
    verdict.hidden = !body.uninformative;
    verdict.textContent = body.uninformative ? "no better than chance" : "";
    verdict.title = body.verdict || "";
    const list = $("model-warnings");
    list.replaceChildren();
    (body.warnings || []).forEach((text) => {
      const li = document.createElement("li");
      li.textContent = text;
      list.appendChild(li);
    });
    list.hidden = !(body.warnings || []).length;
  }

  // The legend follows the model being served: its threshold moves with each version.
  function showBands(bands) {
    if (!bands || bands.amber === null || bands.amber === undefined) return;
    const pct = (v) => (100 * v).toFixed(1);
    document.querySelectorAll(".band-amber").forEach((el) => { el.textContent = pct(bands.amber); });
    document.querySelectorAll(".band-red").forEach((el) => { el.textContent = pct(bands.red); });
  }

  // Rounded down, so that a risk just under a band's threshold never shows as the threshold itself.
  function percent(risk) {
    return (Math.floor(1000 * risk) / 10).toFixed(1) + "%";
  }

  function clientName(row, idColumns) {
    const ids = idColumns.map((name) => row[name]).filter((v) => v !== null && v !== undefined && v !== "");
    return ids.length ? ids.join(" / ") : "row " + (row.row + 1);
  }

  function render(result) {
    const idColumns = Object.keys(result.predictions[0] || {}).filter((k) => !["row", "prediction", "risk", "band"].includes(k));
    const sorted = result.predictions.slice().sort((a, b) => b.risk - a.risk || a.row - b.row);
    const body = document.querySelector("#results-table tbody");
    body.replaceChildren();
    sorted.forEach((row, index) => {
      const tr = document.createElement("tr");
      tr.className = "band-" + row.band;
      const cells = [String(index + 1), clientName(row, idColumns), percent(row.risk)];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;  // text only: values from the file are never parsed as HTML
        if (i !== 1) td.className = "num";
        tr.appendChild(td);
      });
      const meter = document.createElement("td");
      meter.innerHTML = '<div class="meter"><span></span></div>';
      const bar = meter.querySelector("span");
      bar.className = row.band;
      bar.style.width = Math.max(1, 100 * row.risk).toFixed(1) + "%";
      tr.appendChild(meter);
      const band = document.createElement("td");
      band.innerHTML = '<span class="pill"></span>';
      band.firstChild.classList.add(row.band);
      band.firstChild.textContent = row.band;
      tr.appendChild(band);
      const prediction = document.createElement("td");
      prediction.textContent = row.prediction === 1 ? "likely to leave" : "likely to stay";
      tr.appendChild(prediction);
      body.appendChild(tr);
    });
    $("model-version").textContent = result.model_version;
    $("summary-text").textContent = result.rows + " clients scored by model " + result.model_version + ", riskiest first.";
    ["red", "amber", "green"].forEach((b) => { $("count-" + b).textContent = result.band_counts[b] + " " + b; });
    const notes = $("notes");
    notes.replaceChildren();
    const add = (text) => { const li = document.createElement("li"); li.textContent = text; notes.appendChild(li); };
    Object.entries(result.unseen_categories).forEach(([column, count]) => add(count + " value(s) of " + column + " were never seen in training; scored as unknown."));
    Object.entries(result.missing_values).forEach(([column, count]) => add(count + " missing value(s) in " + column + "; the model filled them in."));
    if (result.ignored_columns && result.ignored_columns.length) {
      const more = result.ignored_columns_not_named ? " and " + result.ignored_columns_not_named + " more" : "";
      add("Ignored, as the model does not use them: " + result.ignored_columns.join(", ") + more + ".");
    }
    $("results").hidden = false;
    lastResult = { result: result, sorted: sorted, idColumns: idColumns };
  }

  function csvCell(value) {
    let text = value === null || value === undefined ? "" : String(value);
    if (/^[=+\-@\t\r]/.test(text)) text = "'" + text;  // no formulas when opened in a spreadsheet
    return /[",\n\r]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
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
    const link = document.createElement("a");
    link.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
    link.download = "scored_clients_" + result.model_version + ".csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
  }

  async function score(event) {
    event.preventDefault();
    const file = $("csv-file").files[0];
    if (!file) { showError("Choose a CSV file first."); return; }
    const token = $("api-token").value.trim();
    if (token) sessionStorage.setItem("riskToken", token);
    const data = new FormData();
    data.append("file", file);
    $("score-button").disabled = true;
    showError("");
    try {
      const response = await fetch("/prediction", { method: "POST", body: data, headers: headers() });
      const body = await readJson(response);
      if (response.status === 401) { showError(tokenRefused()); return; }
      if (!response.ok) { showError("Could not score the file: " + (body.message || response.statusText)); return; }
      render(body);
      if (!modelLoaded) loadModel();
    } catch (e) {
      showError("The server did not answer: " + e.message);
    } finally {
      $("score-button").disabled = false;
    }
  }

  $("token-row").hidden = !tokenRequired;
  $("upload-form").addEventListener("submit", score);
  $("download-button").addEventListener("click", download);
  loadModel();
})();
