/* Modelyard pages: toasts, the delete dialog, and live progress on Settings › Models.
 *
 * Live updates follow docs/live-protocol.md: the server sends `snapshot`, `operation`,
 * `model`, `cache` and `runtime` messages on /ws/live/. When the websocket cannot connect
 * (or stays closed for a few seconds) the page polls every 2 s instead, and says so.
 */
(function () {
  "use strict";

  var body = document.body;
  // The operation states and kinds come from the server (models_app/models.py), once.
  var VOCABULARY = JSON.parse(document.getElementById("operation-vocabulary").textContent);
  var TERMINAL = VOCABULARY.terminal;
  var KIND = VOCABULARY.kinds;
  var UNITS = ["KB", "MB", "GB", "TB", "PB"];
  var NBSP = "\u00a0";
  var FALLBACK_AFTER_MS = 3000;
  var POLL_MS = 2000;

  // --- formatting: the same texts as models_app/views.py (Django's filesizeformat) ---------

  function fileSize(n) {
    n = Math.max(0, Math.floor(Number(n) || 0));
    if (n < 1024) return n + NBSP + (n === 1 ? "byte" : "bytes");
    var i = -1;
    do {
      n /= 1024;
      i++;
    } while (n >= 1024 && i < UNITS.length - 1);
    return n.toFixed(1) + NBSP + UNITS[i];
  }

  function duration(s) {
    s = Math.floor(s);
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    s = s % 60;
    if (m < 60) return m + " min " + (s < 10 ? "0" : "") + s + " s";
    var h = Math.floor(m / 60);
    m = m % 60;
    return h + " h " + (m < 10 ? "0" : "") + m + " min";
  }

  function figures(op) {
    var total = op.bytes_total || 0;
    var done = fileSize(op.bytes_done);
    return {
      percent: total ? Math.min(100, Math.floor((100 * op.bytes_done) / total)) : null,
      bytes: total ? done + " of " + fileSize(total) : op.bytes_done ? done : "",
      speed: op.speed ? fileSize(op.speed) + "/s" : "",
      eta: op.eta_seconds ? duration(op.eta_seconds) + " left" : "",
    };
  }

  function statusText(op) {
    var kind = KIND[op.kind] || op.kind;
    if (op.cancel_requested) return "Cancelling…";
    if (op.state === "queued") return kind + " queued";
    return (
      {
        download: "Downloading", delete: "Deleting", load: "Loading", unload: "Unloading",
        verify: "Verifying", repair: "Repairing", update: "Updating",
      }[op.kind] ||
      kind + " running"
    );
  }

  // --- toasts --------------------------------------------------------------------------------

  function dismissLater(el, level) {
    setTimeout(function () {
      el.remove();
    }, level === "error" ? 12000 : 6000);
  }

  function toast(level, message) {
    var box = document.getElementById("toasts");
    if (!box || !message) return;
    level = level === "error" || level === "success" ? level : "info";
    var el = document.createElement("div");
    el.className = "toast toast-" + level;
    el.dataset.testid = "toast";
    el.dataset.level = level;
    el.setAttribute("role", level === "error" ? "alert" : "status");
    var text = document.createElement("span");
    text.className = "toast-text";
    text.textContent = message;
    var close = document.createElement("button");
    close.type = "button";
    close.className = "toast-close";
    close.setAttribute("aria-label", "Dismiss");
    close.textContent = "×";
    el.append(text, close);
    box.append(el);
    while (box.children.length > 5) box.firstElementChild.remove();
    dismissLater(el, level);
  }

  document.querySelectorAll("#toasts .toast").forEach(function (el) {
    dismissLater(el, el.dataset.level);
  });
  document.addEventListener("click", function (e) {
    var close = e.target.closest(".toast-close");
    if (close) close.closest(".toast").remove();
    var dismiss = e.target.closest("[data-dialog-close]");
    if (dismiss) dismiss.closest("dialog").close();
  });

  // HX-Trigger: {"toast": {"level": "...", "message": "..."}} after every action.
  body.addEventListener("toast", function (e) {
    toast(e.detail.level, e.detail.message);
  });

  if (!window.htmx) return;

  // --- htmx: error partials, the dialog, focus --------------------------------------------

  // Requests in flight per swap target (a card's, the header's or the runtime panel's id),
  // counted on the request itself: its end is seen even when a swap detached the element
  // that sent it, so no target stays "busy" for good. A refresh asked for while its target
  // is busy is not dropped but run when the target is free: the answer in flight may have
  // been read before the change that asked for it.
  var inFlight = {};
  var stale = {};
  var refreshers = {}; // target id → function that fetches it again

  function targetId(target) {
    return target && target.id ? target.id : null;
  }

  function busy(id) {
    return !!inFlight[id];
  }

  body.addEventListener("htmx:beforeSwap", function (e) {
    // Our mapped errors (4xx with X-Modelyard-Error) carry the card showing the code.
    if (e.detail.xhr.getResponseHeader("X-Modelyard-Error")) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });
  body.addEventListener("htmx:responseError", function (e) {
    var status = e.detail.xhr.status;
    toast(
      "error",
      status === 403
        ? "Refused (403): your session or CSRF token expired. Reload the page."
        : "The request failed (" + status + ")."
    );
  });
  body.addEventListener("htmx:sendError", function () {
    toast("error", "The server did not answer. Check the connection and try again.");
  });

  body.addEventListener("htmx:beforeRequest", function (e) {
    var dialog = e.detail.elt.closest && e.detail.elt.closest("dialog");
    if (dialog && e.detail.requestConfig.verb === "post") dialog.close();
    var id = targetId(e.detail.target);
    if (!id) return;
    // Two answers for one target in flight may land in either order: fetch it once more
    // after both, so the newest state has the last word.
    if (inFlight[id]) stale[id] = true;
    inFlight[id] = (inFlight[id] || 0) + 1;
    e.detail.xhr.addEventListener("loadend", function () {
      if (--inFlight[id] > 0) return;
      delete inFlight[id];
      if (stale[id]) {
        delete stale[id];
        if (refreshers[id]) refreshers[id]();
      }
    });
  });
  body.addEventListener("htmx:afterRequest", function (e) {
    var target = e.detail.target;
    var key = target && target.dataset && target.dataset.model;
    // After an action the button that had focus is gone: put focus back on the card.
    if (key && e.detail.requestConfig.verb === "post") {
      var card = cardFor(key);
      var active = document.activeElement;
      if (card && (!active || active === body || !active.isConnected)) {
        var first = card.querySelector(".actions button:not([disabled]), .actions a");
        (first || card).focus();
      }
    }
  });

  // Fetch one swap target again, `delay` ms from now (calls in between are one fetch). The
  // target is the request's source too: htmx keeps one request per source in flight and
  // queues only the last, so refreshes of different parts must not share one.
  var timers = {};
  function refresh(id, url, delay, after) {
    refreshers[id] = function () {
      refresh(id, url, delay, after);
    };
    if (timers[id]) return;
    timers[id] = setTimeout(function () {
      delete timers[id];
      var el = document.getElementById(id);
      if (!el) return;
      if (busy(id)) {
        stale[id] = true;
        return;
      }
      var done = htmx.ajax("GET", url, {
        source: el,
        target: el,
        swap: "outerHTML",
      });
      if (after) done.then(after);
    }, delay);
  }

  htmx.onLoad(function (elt) {
    var dialogs = elt.matches && elt.matches("dialog[data-autoshow]") ? [elt] : [];
    if (elt.querySelectorAll) dialogs = dialogs.concat([].slice.call(elt.querySelectorAll("dialog[data-autoshow]")));
    dialogs.forEach(function (dialog) {
      dialog.removeAttribute("data-autoshow");
      if (!dialog.open) dialog.showModal();
    });
  });

  // --- live updates (Settings › Models only) -------------------------------------------------

  if (body.dataset.page !== "models") return;

  var liveStatus = document.querySelector('[data-testid="live-status"]');
  var announced = {}; // operation ids whose end was toasted
  var runtimeSeen = null; // instance id → state, as last shown (null: not yet)
  var socket = null;
  var polling = null;
  var fallbackTimer = null;
  var reconnectTimer = null;
  var reconnectDelay = 1000;
  var refused = false;

  function cardFor(key) {
    return document.getElementById("model-" + key);
  }

  function cardName(key) {
    var card = cardFor(key);
    var title = card && card.querySelector(".card-title");
    return title ? title.textContent.trim() : key;
  }

  function setLive(state, text) {
    if (!liveStatus) return;
    liveStatus.dataset.state = state;
    liveStatus.textContent =
      text ||
      {
        connecting: "Connecting…",
        live: "Live",
        reconnecting: "Reconnecting…",
        polling: "Live updates unavailable — refreshing every 2\u00a0s",
      }[state];
  }

  function refreshCard(key) {
    var card = cardFor(key);
    if (!card) return;
    var before = card.dataset.operationId;
    var url = body.dataset.modelsUrl + encodeURIComponent(key) + "/card/";
    refresh(card.id, url, 100, function () {
      // When polling, the end of an operation shows up as a card without it.
      var now = cardFor(key);
      if (polling && before && now && !now.dataset.operationId && now.dataset.lastOperationId === before) {
        var code = now.querySelector('[data-testid="error-code"]');
        var text = now.querySelector(".alert-text");
        announce({
          id: before,
          model: key,
          kind: now.dataset.lastOperationKind,
          state: now.dataset.operationState,
          error_code: code ? code.textContent.trim() : "",
          error_message: text ? text.textContent.trim() : "",
        });
      }
    });
  }

  function refreshHeader() {
    refresh("models-header", body.dataset.headerUrl, 150);
  }

  function updateCache(cache) {
    var set = function (testid, bytes) {
      var el = document.querySelector('#models-header [data-testid="' + testid + '"]');
      if (el && bytes != null) {
        el.dataset.bytes = bytes;
        el.textContent = fileSize(bytes);
      }
    };
    set("cache-managed", cache.managed_bytes);
    set("cache-other", (cache.unmanaged_bytes || 0) + (cache.partial_bytes || 0));
    set("free-disk", cache.free_disk_bytes);
    set("quota-bytes", cache.quota_bytes || 0);
    var quota = document.querySelector('#models-header [data-testid="quota"]');
    if (quota) quota.hidden = !cache.quota_bytes;
  }

  function announce(op) {
    if (announced[op.id]) return;
    announced[op.id] = true;
    var name = op.model ? cardName(op.model) : "the models store";
    var what = (KIND[op.kind] || "Operation") + " of " + name;
    if (op.state === "succeeded") {
      var done = { delete: name + " deleted.", load: name + " is loaded.", unload: name + " unloaded." };
      toast("success", done[op.kind] || what + " completed.");
    } else if (op.state === "failed") {
      toast("error", what + " failed: " + [op.error_code, op.error_message].filter(Boolean).join(": "));
    } else if (op.state === "cancelled") {
      toast("info", what + " cancelled.");
    } else if (op.state === "interrupted") {
      toast("error", what + " was interrupted; Retry resumes it.");
    }
  }

  function showProgress(card, box, op) {
    var f = figures(op);
    var bar = box.querySelector("progress");
    if (f.percent === null) {
      bar.removeAttribute("value");
      bar.textContent = "";
    } else {
      bar.value = f.percent;
      bar.textContent = f.percent + "%";
    }
    ["percent", "bytes", "speed", "eta"].forEach(function (field) {
      var el = box.querySelector('[data-field="' + field + '"]');
      if (el) el.textContent = field === "percent" ? (f.percent === null ? "" : f.percent + "%") : f[field];
    });
    box.dataset.state = op.state;
    card.dataset.operationState = op.state;
    var status = card.querySelector('[data-testid="status"]');
    if (status) status.textContent = statusText(op);
    var cancel = card.querySelector('[data-testid="cancel"]');
    if (cancel && op.cancel_requested) {
      cancel.disabled = true;
      cancel.textContent = "Cancelling…";
    }
  }

  function onOperation(op) {
    if (!op) return;
    if (!op.model) {
      // A store-wide operation (prune): the header shows it; its deletes move the cards.
      if (TERMINAL.indexOf(op.state) >= 0) announce(op);
      refreshHeader();
      return;
    }
    var card = cardFor(op.model);
    if (TERMINAL.indexOf(op.state) >= 0) {
      announce(op);
      if (card) refreshCard(op.model);
      refreshHeader();
      return;
    }
    if (!card || busy(card.id)) return; // not shown, or an answer with the card is coming
    var box = card.querySelector('.progress[data-operation-id="' + op.id + '"]');
    if (box) {
      showProgress(card, box, op);
    } else {
      // Started elsewhere (another tab, the admin, the API): fetch the card with its bar.
      if (op.state === "queued" || !card.dataset.operationId) {
        toast("info", (KIND[op.kind] || "Operation") + " of " + cardName(op.model) + " started.");
      }
      refreshCard(op.model);
    }
  }

  function onSnapshot(msg) {
    var active = {};
    (msg.operations || []).forEach(function (op) {
      active[op.id] = true;
      onOperation(op);
    });
    // Operations that ended while we were not listening.
    document.querySelectorAll("article[data-model][data-operation-id]").forEach(function (card) {
      if (!active[card.dataset.operationId]) refreshCard(card.dataset.model);
    });
    if (msg.cache) updateCache(msg.cache);
    if (msg.runtime) onRuntime(msg.runtime, true);
  }

  // --- the runtime: the panel and the cards' loaded state ------------------------------------

  function refreshRuntime() {
    var panel = document.getElementById("runtime-panel");
    if (panel) refresh(panel.id, panel.dataset.runtimeUrl, 150);
  }

  // The state a card shows for a model: its live instance's, else its newest failed one's.
  function statesByModel(instances) {
    var chosen = {};
    instances.forEach(function (i) {
      var live = i.state !== "failed";
      var had = chosen[i.model];
      if (!had || (live && !had.live) || (live === had.live && i.id > had.id)) {
        chosen[i.model] = { live: live, id: i.id, state: i.state };
      }
    });
    var states = {};
    Object.keys(chosen).forEach(function (key) {
      states[key] = chosen[key].state;
    });
    return states;
  }

  function syncCards(instances) {
    var states = statesByModel(instances);
    document.querySelectorAll('article[data-runnable="true"]').forEach(function (card) {
      var key = card.dataset.model;
      if ((card.dataset.runtimeState || "") !== (states[key] || "")) refreshCard(key);
    });
  }

  function onRuntime(runtime, quiet) {
    var instances = (runtime && runtime.instances) || [];
    var seen = {};
    instances.forEach(function (i) {
      seen[i.id] = i.state;
      // A runner that died on its own (a crash, SIGKILL, out of memory); a load that
      // failed is told by its operation's end.
      if (!quiet && runtimeSeen && runtimeSeen[i.id] === "ready" && i.state === "failed") {
        toast("error", cardName(i.model) + ": " + [i.error_code, i.error_message].filter(Boolean).join(": "));
      }
    });
    runtimeSeen = seen;
    syncCards(instances);
    refreshRuntime();
  }

  // The rows of a fetched panel stand for a runtime message when polling (and agree with
  // the last one when live).
  function onRuntimePanel(panel) {
    var now = Date.now();
    panel.querySelectorAll("[data-expires-in]").forEach(function (el) {
      el.dataset.seenAt = now;
    });
    var instances = [].map.call(panel.querySelectorAll("tr[data-instance-model]"), function (row) {
      return { id: Number(row.dataset.instanceId), model: row.dataset.instanceModel, state: row.dataset.state };
    });
    syncCards(instances);
  }

  function tickExpiry() {
    var now = Date.now();
    document.querySelectorAll("#runtime-panel [data-expires-in]").forEach(function (el) {
      var seenAt = Number(el.dataset.seenAt || now);
      if (!el.dataset.seenAt) el.dataset.seenAt = seenAt;
      var left = Number(el.dataset.expiresIn) - (now - seenAt) / 1000;
      el.textContent = left >= 1 ? "in " + duration(left) : "now";
    });
  }

  htmx.onLoad(function (elt) {
    var panel = elt.id === "runtime-panel" ? elt : elt.querySelector && elt.querySelector("#runtime-panel");
    if (panel && panel !== document.body) onRuntimePanel(panel);
  });
  setInterval(tickExpiry, 1000);

  function onModel(model) {
    if (!model || !model.key) return;
    refreshCard(model.key);
    if (model.is_active) {
      // The previously active model of that type lost its badge.
      document
        .querySelectorAll('article[data-type="' + model.type + '"][data-active="true"]')
        .forEach(function (card) {
          if (card.dataset.model !== model.key) refreshCard(card.dataset.model);
        });
    }
  }

  function handle(msg) {
    if (msg.type === "snapshot") onSnapshot(msg);
    else if (msg.type === "operation") onOperation(msg.operation);
    else if (msg.type === "model") onModel(msg.model);
    else if (msg.type === "cache" && msg.cache) updateCache(msg.cache);
    else if (msg.type === "runtime") onRuntime(msg.runtime, false);
  }

  function poll() {
    document.querySelectorAll("article[data-model][data-operation-id]").forEach(function (card) {
      refreshCard(card.dataset.model);
    });
    refreshHeader();
    refreshRuntime();
  }

  function startPolling(text) {
    clearTimeout(fallbackTimer);
    fallbackTimer = null;
    setLive("polling", text);
    if (polling) return;
    polling = setInterval(poll, POLL_MS);
    poll();
  }

  function stopPolling() {
    clearInterval(polling);
    polling = null;
  }

  function armFallback() {
    if (!polling && !fallbackTimer) fallbackTimer = setTimeout(startPolling, FALLBACK_AFTER_MS);
  }

  function scheduleReconnect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 15000);
  }

  function connect() {
    if (refused) return;
    if (!("WebSocket" in window)) return startPolling();
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + body.dataset.liveUrl;
    try {
      socket = new WebSocket(url);
    } catch (err) {
      armFallback();
      return scheduleReconnect();
    }
    armFallback();
    socket.onopen = function () {
      clearTimeout(fallbackTimer);
      fallbackTimer = null;
      reconnectDelay = 1000;
      stopPolling();
      setLive("live");
    };
    socket.onmessage = function (e) {
      var msg;
      try {
        msg = JSON.parse(e.data);
      } catch (err) {
        return;
      }
      handle(msg);
    };
    socket.onclose = function (e) {
      socket = null;
      if (e.code === 4401 || e.code === 4403) {
        // Refused for good (signed out or not a superuser): polling still shows the truth.
        refused = true;
        return startPolling(
          "Live updates refused (" + (e.code === 4401 ? "signed out" : "not allowed") + ") — refreshing every 2\u00a0s"
        );
      }
      if (!polling) setLive("reconnecting");
      armFallback();
      scheduleReconnect();
    };
  }

  body.addEventListener("htmx:historyRestore", poll);
  setLive("connecting");
  connect();
})();
