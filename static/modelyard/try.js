/* Try it, on Settings › Models: a model's box in #dialog-slot (templates/modelyard/_try_dialog.html).
 *
 * An LLM: a chat (/v1/chat/completions) or a plain completion (/v1/completions, for base
 * models), streamed: fetch + ReadableStream reads the server-sent events as the runner
 * writes them, each token goes into the page as it arrives, and the box shows the time to
 * first token and tokens per second. An embedding model or a reranker: two texts and the
 * cosine similarity of their vectors (/v1/embeddings). The requests carry the page's
 * session and its CSRF token (hx-headers on <body>), as the /v1 endpoints accept from a
 * signed-in superuser.
 */
(function () {
  "use strict";

  var LOAD_HEADER = "X-Modelyard-Load-Seconds";
  var current = null; // the AbortController of the request in flight (one at a time)

  function csrfToken() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || "";
    } catch (err) {
      return "";
    }
  }

  function post(url, body, signal) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        Accept: body.stream ? "text/event-stream" : "application/json",
        "X-CSRFToken": csrfToken(),
      },
      body: JSON.stringify(body),
      signal: signal,
    });
  }

  // --- what the box shows --------------------------------------------------------------------

  function part(dialog, testid) {
    return dialog.querySelector('[data-testid="' + testid + '"]');
  }

  function stat(dialog, name, text) {
    var el = dialog.querySelector('[data-stat="' + name + '"]');
    if (el) el.textContent = text;
  }

  function note(dialog, text) {
    var el = part(dialog, "try-note");
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  function showError(dialog, text) {
    var el = part(dialog, "try-error");
    el.textContent = text || "";
    el.hidden = !text;
  }

  function loadText(response) {
    var seconds = parseFloat(response.headers.get(LOAD_HEADER) || "0");
    return seconds > 0 ? "loaded for this request in " + seconds.toFixed(2) + " s" : "already loaded";
  }

  async function errorText(response) {
    // The /v1 endpoints answer errors in OpenAI's shape, with Modelyard's stable code.
    try {
      var body = await response.json();
      var error = body.error || {};
      return [error.code, error.message].filter(Boolean).join(": ") || "HTTP " + response.status;
    } catch (err) {
      return "The request failed (HTTP " + response.status + ").";
    }
  }

  function busy(dialog, on) {
    var send = part(dialog, "try-send");
    var stop = dialog.querySelector("[data-try-stop]");
    if (send) send.disabled = on;
    if (stop) stop.hidden = !on;
    dialog.dataset.busy = on ? "true" : "false";
  }

  function addTurn(transcript, role, text) {
    var el = document.createElement("div");
    el.className = "try-turn try-turn-" + role;
    el.dataset.role = role;
    el.textContent = text;
    transcript.append(el);
    return el;
  }

  // --- server-sent events ------------------------------------------------------------------

  // Call onData with each event's JSON, in order, as the bytes arrive, until [DONE].
  // The body is read to its end even so: closing the connection early is a disconnect
  // to the server, which then has to clean up the request in a cancelled task.
  async function readEvents(response, onData) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var buffer = "";
    var done = false;
    for (;;) {
      var step = await reader.read();
      if (step.done) {
        buffer += decoder.decode();
      } else {
        buffer += decoder.decode(step.value, { stream: true });
      }
      var blocks = buffer.split(/\r?\n\r?\n/);
      buffer = step.done ? "" : blocks.pop();
      for (var i = 0; i < blocks.length && !done; i++) done = handleEvent(blocks[i], onData);
      if (step.done) break;
    }
  }

  function handleEvent(block, onData) {
    var data = block
      .split(/\r?\n/)
      .filter(function (line) {
        return line.indexOf("data:") === 0;
      })
      .map(function (line) {
        return line.slice(5).replace(/^ /, "");
      })
      .join("\n");
    if (!data) return false;
    if (data === "[DONE]") return true;
    var chunk;
    try {
      chunk = JSON.parse(data);
    } catch (err) {
      return false;
    }
    onData(chunk);
    return false;
  }

  // --- generation --------------------------------------------------------------------------

  async function generate(dialog, form) {
    var mode = form.elements.mode.value === "completion" ? "completion" : "chat";
    var prompt = form.elements.prompt.value;
    if (!prompt.trim()) return;
    var maxTokens = parseInt(form.elements.max_tokens.value, 10) || 128;
    var key = dialog.dataset.modelKey;
    var history = dialog._tryMessages || (dialog._tryMessages = []);
    var transcript = part(dialog, "try-output");
    showError(dialog, "");
    note(dialog, "");
    ["ttft", "tokens", "rate", "load", "finish"].forEach(function (name) {
      stat(dialog, name, "…");
    });

    var url, body, out;
    if (mode === "chat") {
      history.push({ role: "user", content: prompt });
      url = dialog.dataset.chatUrl;
      body = { model: key, messages: history.slice(), stream: true, max_tokens: maxTokens };
      addTurn(transcript, "user", prompt);
      out = addTurn(transcript, "assistant", "");
      form.elements.prompt.value = "";
    } else {
      url = dialog.dataset.completionsUrl;
      body = { model: key, prompt: prompt, stream: true, max_tokens: maxTokens };
      transcript.textContent = "";
      addTurn(transcript, "prompt", prompt);
      out = addTurn(transcript, "completion", "");
    }
    out.classList.add("is-streaming");
    out.dataset.testid = "try-reply";

    if (current) current.abort();
    var controller = new AbortController();
    current = controller;
    busy(dialog, true);
    var sent = performance.now();
    var first = null;
    var last = null;
    var tokens = 0;
    var text = "";
    var finish = "";
    var failed = false;
    var stopped = false;

    function rate() {
      if (tokens < 2 || last === first) return "—";
      // Decoding speed: the tokens after the first, over the time they took.
      return ((tokens - 1) / ((last - first) / 1000)).toFixed(1);
    }

    try {
      var response = await post(url, body, controller.signal);
      stat(dialog, "load", loadText(response));
      if (!response.ok) {
        failed = true;
        showError(dialog, await errorText(response));
      } else {
        await readEvents(response, function (chunk) {
          if (chunk.error) {
            failed = true;
            var error = chunk.error;
            showError(dialog, typeof error === "string" ? error : [error.code, error.message].filter(Boolean).join(": "));
            return;
          }
          var choice = (chunk.choices || [])[0] || {};
          var piece = mode === "chat" ? (choice.delta && choice.delta.content) || "" : choice.text || "";
          if (piece) {
            var now = performance.now();
            if (first === null) {
              first = now;
              stat(dialog, "ttft", Math.round(first - sent) + " ms");
            }
            last = now;
            tokens++;
            text += piece;
            out.textContent = text;
            stat(dialog, "tokens", String(tokens));
            stat(dialog, "rate", rate());
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        });
      }
    } catch (err) {
      if (err.name === "AbortError") {
        stopped = true;
      } else {
        failed = true;
        showError(dialog, "The request failed: " + err.message);
      }
    } finally {
      if (current === controller) current = null;
      busy(dialog, false);
      out.classList.remove("is-streaming");
    }

    if (first === null) stat(dialog, "ttft", "—");
    stat(dialog, "tokens", String(tokens));
    stat(dialog, "rate", rate());
    stat(dialog, "finish", stopped ? "stopped" : finish || "—");
    if (mode === "chat") {
      if (failed) {
        history.pop(); // the user's turn had no answer: leave it out of the next request
        out.remove();
      } else {
        history.push({ role: "assistant", content: text });
      }
    }
    if (stopped) {
      note(dialog, "Stopped after " + tokens + " token" + (tokens === 1 ? "" : "s") + ".");
    } else if (!failed && !text) {
      // Not an error: a base model (like the Gemma 270M test file) ends a chat at once.
      out.classList.add("is-empty");
      note(
        dialog,
        mode === "chat"
          ? "The model ended its reply at once, with no text (finish reason: " + (finish || "none") +
              "). Base models often do: they continue a text rather than answer it. Try Completion."
          : "The model generated no text (finish reason: " + (finish || "none") + ")."
      );
    }
  }

  // --- similarity --------------------------------------------------------------------------

  // One vector per text; a model that answers one per token is mean-pooled here.
  function vectorOf(embedding) {
    if (!Array.isArray(embedding[0])) return { vector: embedding, pooled: false };
    var dims = embedding[0].length;
    var sum = new Array(dims).fill(0);
    embedding.forEach(function (row) {
      for (var i = 0; i < dims; i++) sum[i] += row[i];
    });
    return {
      vector: sum.map(function (v) {
        return v / embedding.length;
      }),
      pooled: true,
    };
  }

  function cosine(a, b) {
    var dot = 0;
    var na = 0;
    var nb = 0;
    for (var i = 0; i < a.length; i++) {
      dot += a[i] * b[i];
      na += a[i] * a[i];
      nb += b[i] * b[i];
    }
    return na && nb ? dot / Math.sqrt(na * nb) : null;
  }

  async function similarity(dialog, form) {
    var texts = [form.elements.a.value, form.elements.b.value];
    if (!texts[0].trim() || !texts[1].trim()) return;
    var result = part(dialog, "try-result");
    showError(dialog, "");
    note(dialog, "");
    if (current) current.abort();
    var controller = new AbortController();
    current = controller;
    busy(dialog, true);
    var started = performance.now();
    try {
      var body = { model: dialog.dataset.modelKey, input: texts };
      var response = await post(dialog.dataset.embeddingsUrl, body, controller.signal);
      if (!response.ok) {
        result.hidden = true;
        showError(dialog, await errorText(response));
        return;
      }
      var data = ((await response.json()).data || []).slice().sort(function (x, y) {
        return x.index - y.index;
      });
      if (data.length !== 2) throw new Error("expected two embeddings, got " + data.length);
      var a = vectorOf(data[0].embedding);
      var b = vectorOf(data[1].embedding);
      var value = cosine(a.vector, b.vector);
      part(dialog, "try-similarity").textContent = value === null ? "undefined (a zero vector)" : value.toFixed(4);
      stat(dialog, "dimensions", String(a.vector.length));
      stat(dialog, "time", Math.round(performance.now() - started) + " ms");
      stat(dialog, "load", loadText(response));
      if (a.pooled || b.pooled) note(dialog, "The model answered one vector per token; they were averaged here.");
      result.hidden = false;
    } catch (err) {
      if (err.name !== "AbortError") showError(dialog, "The request failed: " + err.message);
    } finally {
      if (current === controller) current = null;
      busy(dialog, false);
    }
  }

  // --- wiring ------------------------------------------------------------------------------

  document.addEventListener("submit", function (e) {
    var form = e.target.closest && e.target.closest("form[data-try]");
    if (!form) return;
    e.preventDefault();
    var dialog = form.closest("dialog");
    if (dialog.dataset.busy === "true") return;
    if (form.dataset.try === "similarity") similarity(dialog, form);
    else generate(dialog, form);
  });

  document.addEventListener("keydown", function (e) {
    // Ctrl+Enter (or Cmd+Enter) sends, as in most chat boxes; Enter alone is a new line.
    if (e.key !== "Enter" || !(e.ctrlKey || e.metaKey)) return;
    var form = e.target.closest && e.target.closest("form[data-try]");
    if (form) form.requestSubmit();
  });

  document.addEventListener("click", function (e) {
    if (e.target.closest("[data-try-stop]") && current) current.abort();
    var clear = e.target.closest("[data-try-clear]");
    if (clear) {
      var dialog = clear.closest("dialog");
      dialog._tryMessages = [];
      part(dialog, "try-output").textContent = "";
      note(dialog, "");
      showError(dialog, "");
    }
  });

  // A closed box stops its stream (the runner stops generating when the client goes), and
  // so does one that another box replaces. `close` does not bubble: listen while capturing.
  document.addEventListener(
    "close",
    function (e) {
      if (e.target.id === "try-dialog" && current) current.abort();
    },
    true
  );
  document.body.addEventListener("htmx:beforeSwap", function (e) {
    if (e.detail.target && e.detail.target.id === "dialog-slot" && current) current.abort();
  });
})();
