// recagent's web page: talks to the native API of `recagent serve` (same origin).
// Everything from a catalog, a user or the model goes into the page as text (textContent, attributes set by the DOM
// API), never as markup; the Content-Security-Policy forbids inline scripts besides.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    catalog: $("catalog"),
    newConversation: $("new-conversation"),
    history: $("history"),
    historyEmpty: $("history-empty"),
    keyForm: $("key-form"),
    key: $("api-key"),
    notice: $("notice"),
    messages: $("messages"),
    composer: $("composer"),
    message: $("message"),
    send: $("send"),
    photo: $("photo"),
    audio: $("audio"),
    record: $("record"),
    status: $("status"),
    attachment: $("attachment"),
    attachmentImage: $("attachment-image"),
    attachmentRemove: $("attachment-remove"),
  };
  const KEY = "recagent.key";
  const state = {
    conversation: null, // {id, catalog}
    photo: null, // a File or Blob waiting to be sent
    busy: false,
    recorder: null,
  };

  // ---- small DOM helpers --------------------------------------------------------------------------------------
  function el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (name === "text") node.textContent = String(value);
      else if (name === "className") node.className = value;
      else node.setAttribute(name, String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function scrollDown() {
    els.messages.lastElementChild?.scrollIntoView({ block: "end" });
  }

  function notice(text) {
    els.notice.textContent = text || "";
    els.notice.hidden = !text;
  }

  function setStatus(text) {
    els.status.textContent = text || "";
  }

  // ---- the API ------------------------------------------------------------------------------------------------
  function headers(extra = {}) {
    const key = localStorage.getItem(KEY);
    return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
  }

  // A clear line for a failed response: the server's own "error" text, with what to do.
  async function problem(response) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") message = body.error;
      else if (body && body.error && typeof body.error.message === "string") message = body.error.message;
    } catch (_) {
      /* not JSON: keep the status line */
    }
    if (response.status === 401) return `${message}. Enter your key under "API key".`;
    if (response.status === 503) {
      const retry = response.headers.get("Retry-After");
      const when = retry && !/try again/.test(message) ? ` (try again in ${retry} s)` : "";
      return `The service is busy or a backend is down: ${message}${when}`;
    }
    if (response.status === 409) return `Please wait: ${message}`;
    return message;
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
    } catch (_) {
      throw new Error("The service cannot be reached: is `recagent serve` running?");
    }
    if (!response.ok) throw new Error(await problem(response));
    return response;
  }

  async function json(path, options) {
    return (await api(path, options)).json();
  }

  // ---- catalogs and conversations -----------------------------------------------------------------------------
  async function loadCatalogs() {
    let body = null;
    try {
      const response = await fetch("/readyz");
      body = await response.json();
    } catch (_) {
      notice("The service cannot be reached: is `recagent serve` running?");
    }
    if (!body) return;
    const current = els.catalog.value;
    els.catalog.replaceChildren(...(body.catalogs || []).map((name) => el("option", { value: name, text: name })));
    if (current) els.catalog.value = current;
    if (!body.ready) {
      const why = (body.problems || []).join("; ");
      notice(why ? `The service cannot serve turns: ${why}` : "The service is loading its models; one moment...");
      setTimeout(loadCatalogs, 2000);
    } else if (els.notice.textContent.startsWith("The service is loading")) {
      notice("");
    }
  }

  async function loadHistory() {
    let conversations;
    try {
      conversations = await json("/conversations");
    } catch (error) {
      notice(error.message);
      return;
    }
    els.history.replaceChildren(
      ...conversations.map((c) => {
        const when = new Date(c.updated * 1000).toLocaleString();
        const button = el("button", { type: "button", className: "link" }, [
          el("span", { className: "title", text: c.title || "(untitled)" }),
          el("span", { className: "meta", text: `${c.catalog} · ${when}` }),
        ]);
        if (state.conversation && state.conversation.id === c.id) button.setAttribute("aria-current", "true");
        button.addEventListener("click", () => openConversation(c.id));
        return el("li", {}, [button]);
      }),
    );
    els.historyEmpty.hidden = conversations.length > 0;
  }

  function clearMessages() {
    els.messages.replaceChildren();
  }

  function newConversation() {
    state.conversation = null;
    clearMessages();
    notice("");
    setStatus("");
    loadHistory();
    els.message.focus();
  }

  async function ensureConversation() {
    if (state.conversation && state.conversation.catalog === els.catalog.value) return state.conversation;
    const body = JSON.stringify({ catalog: els.catalog.value || null });
    const created = await json("/conversations", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
    });
    state.conversation = { id: created.id, catalog: created.catalog };
    return state.conversation;
  }

  async function openConversation(id) {
    let body;
    try {
      body = await json(`/conversations/${encodeURIComponent(id)}`);
    } catch (error) {
      notice(error.message);
      return;
    }
    notice("");
    state.conversation = { id: body.id, catalog: body.catalog };
    if ([...els.catalog.options].some((o) => o.value === body.catalog)) els.catalog.value = body.catalog;
    clearMessages();
    for (const turn of body.turns || []) {
      const request = turn.request || {};
      const reply = turn.reply || {};
      const words = reply.transcript || request.text || "";
      userMessage(words || (request.image ? "(a photo)" : ""), null, Boolean(request.audio));
      const answer = assistantMessage();
      answer.showItems(reply.items || [], reply.tool_calls || []);
      answer.setText(reply.reply || "");
    }
    scrollDown();
    loadHistory();
  }

  // ---- messages ----------------------------------------------------------------------------------------------
  function userMessage(text, photo, spoken) {
    const words = el("p", { className: "text", text: text || (spoken ? "(speaking...)" : "") });
    const node = el("li", { className: "message user" }, [
      spoken ? el("span", { className: "badge", text: "voice" }) : null,
      words,
    ]);
    if (photo) {
      const img = el("img", { className: "photo", alt: "Your photo" });
      img.src = URL.createObjectURL(photo);
      node.append(img);
    }
    els.messages.append(node);
    scrollDown();
    return { node, setText: (value) => (words.textContent = value) };
  }

  // The reply's numbered list ("N. Title: reason") gives each card its reason line; the rest is shown as text.
  const LISTED = /^\s*(\d+)\.\s+(.*)$/;

  function assistantMessage() {
    const status = el("p", { className: "status-line", text: "" });
    const cards = el("ul", { className: "cards", "aria-label": "Recommendations" });
    const text = el("p", { className: "text reply" });
    const node = el("li", { className: "message assistant" }, [status, cards, text]);
    els.messages.append(node);
    let shown = []; // [{item, card}]
    let calls = [];

    function setText(value) {
      const kept = [];
      for (const line of String(value).split("\n")) {
        const match = LISTED.exec(line);
        const entry = match && shown[Number(match[1]) - 1];
        if (entry && match[2].startsWith(entry.item.title)) {
          const rest = match[2].slice(entry.item.title.length).replace(/^:\s*/, "");
          entry.reason.textContent = rest;
          entry.reason.hidden = !rest;
        } else {
          kept.push(line);
        }
      }
      text.textContent = kept.join("\n").trim();
    }

    function showItems(items, toolCalls) {
      calls = toolCalls || calls;
      if (shown.length && shown.map((s) => s.item.id).join() === items.map((i) => i.id).join()) return;
      shown = items.map((item) => card(item, () => calls));
      cards.replaceChildren(...shown.map((s) => s.node));
    }

    return {
      node,
      setStatus: (value) => (status.textContent = value || ""),
      setText,
      showItems,
      setCalls: (value) => (calls = value || []),
      fail(message) {
        status.textContent = "";
        const error = el("p", { className: "error", role: "alert", text: message });
        node.append(error);
      },
    };
  }

  function describe(item) {
    const parts = [];
    if (item.year !== undefined && item.year !== null && item.year !== "") parts.push(String(item.year));
    for (const field of ["baseColour", "articleType", "gender"]) if (item[field]) parts.push(String(item[field]));
    if (Array.isArray(item.genres) && item.genres.length) parts.push(item.genres.slice(0, 3).join(", "));
    return parts.join(" · ");
  }

  function card(item, currentCalls) {
    const title = String(item.title ?? item.id);
    const picture = item.image
      ? el("img", { className: "poster", alt: title, src: item.image })
      : el("div", { className: "poster none", role: "img", "aria-label": title, text: title.slice(0, 1) });
    const reason = el("p", { className: "reason" });
    reason.hidden = true;
    const why = el("p", { className: "why" });
    why.hidden = true;
    const buttons = [
      ["like", "Like", "like"],
      ["dislike", "Dislike", "dislike"],
      ["accept", "I'll take it", "accept"],
    ].map(([kind, label]) => {
      const button = el("button", { type: "button", className: `feedback ${kind}`, "aria-pressed": "false" });
      button.textContent = label;
      button.setAttribute("aria-label", `${label}: ${title}`);
      button.addEventListener("click", () => sendFeedback(item, kind, button));
      return button;
    });
    const whyButton = el("button", { type: "button", className: "why-button", "aria-expanded": "false" });
    whyButton.textContent = "Why this?";
    whyButton.setAttribute("aria-label", `Why this: ${title}?`);
    whyButton.addEventListener("click", () => {
      const open = why.hidden;
      if (open) why.textContent = explanation(item, reason.textContent, currentCalls());
      why.hidden = !open;
      whyButton.setAttribute("aria-expanded", String(open));
    });
    const node = el("li", { className: "card", "data-id": item.id }, [
      picture,
      el("div", { className: "body" }, [
        el("h3", { className: "title", text: title }),
        el("p", { className: "meta", text: describe(item) }),
        reason,
        why,
        el("div", { className: "actions" }, [...buttons, whyButton]),
      ]),
    ]);
    return { item, node, reason };
  }

  function explanation(item, reason, calls) {
    const lines = [];
    if (reason) lines.push(`Because: ${reason}.`);
    const search = [...(calls || [])].reverse().find((c) => !c.error);
    if (search) {
      const args = search.arguments || {};
      const bits = [];
      if (args.query) bits.push(`"${args.query}"`);
      if (Array.isArray(args.filters) && args.filters.length) bits.push(`filters ${args.filters.join(", ")}`);
      lines.push(`Found by ${search.name}${bits.length ? `: ${bits.join(", ")}` : ""}.`);
    }
    if (typeof item.score === "number") lines.push(`Score ${item.score.toFixed(2)}.`);
    for (const field of ["tags", "usage", "season"]) {
      const value = item[field];
      if (Array.isArray(value) && value.length) lines.push(`${field}: ${value.slice(0, 5).join(", ")}.`);
      else if (typeof value === "string" && value) lines.push(`${field}: ${value}.`);
    }
    return lines.join(" ") || "It matches your request.";
  }

  async function sendFeedback(item, kind, button) {
    if (!state.conversation) return;
    try {
      await json(`/conversations/${encodeURIComponent(state.conversation.id)}/feedback`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ item: item.id, kind }),
      });
    } catch (error) {
      notice(error.message);
      return;
    }
    notice("");
    if (kind !== "accept") {  // like and dislike exclude each other; "I'll take it" stands beside either
      for (const other of button.parentElement.querySelectorAll(".like, .dislike")) {
        other.setAttribute("aria-pressed", "false");
      }
    }
    button.setAttribute("aria-pressed", "true");
    const said = { like: "Liked", dislike: "Disliked", accept: "Taken" }[kind];
    setStatus(`${said}: ${item.title}`);
  }

  // ---- a turn, streamed -------------------------------------------------------------------------------------
  async function* serverSentEvents(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let kind = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) kind = line.slice(7);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (data.length) yield [kind, JSON.parse(data.join("\n"))];
      }
    }
  }

  function setBusy(busy) {
    state.busy = busy;
    els.send.disabled = busy;
    els.record.disabled = busy && !state.recorder;
    els.composer.setAttribute("aria-busy", String(busy));
  }

  async function sendTurn({ text = "", photo = null, audio = null, audioName = "recording" }) {
    if (state.busy) return;
    if (!text.trim() && !photo && !audio) return;
    notice("");
    setBusy(true);
    const user = userMessage(text, photo, Boolean(audio));
    const answer = assistantMessage();
    answer.setStatus("sending...");
    scrollDown();
    let body;
    const headersOut = { Accept: "text/event-stream" };
    if (photo || audio) {
      body = new FormData();
      body.append("text", text);
      if (photo) body.append("image", photo, photo.name || "photo.jpg");
      if (audio) body.append("audio", audio, audioName);
    } else {
      body = JSON.stringify({ text });
      headersOut["Content-Type"] = "application/json";
    }
    let finished = false;
    try {
      const conversation = await ensureConversation();
      const response = await api(`/conversations/${encodeURIComponent(conversation.id)}/turns`, {
        method: "POST",
        headers: headersOut,
        body,
      });
      let streamed = "";
      let shown = false; // once the cards are there, the user's message stays at the top, the cards under it
      for await (const [kind, value] of serverSentEvents(response)) {
        if (kind === "status") answer.setStatus(`${value}...`);
        else if (kind === "transcript") user.setText(value);
        else if (kind === "items") {
          answer.showItems(value);
          shown = shown || value.length > 0;
        }
        else if (kind === "token") {
          streamed = streamed ? `${streamed}\n${value}` : value;
          answer.setText(streamed);
        } else if (kind === "reply") {
          finished = true;
          notice(""); // what went wrong meanwhile (a like refused while the turn ran...) is over
          answer.setStatus("");
          answer.setCalls(value.tool_calls);
          answer.showItems(value.items || [], value.tool_calls);
          answer.setText(value.reply || "");
          if (value.transcript) user.setText(value.transcript);
          if (value.timings) answer.node.dataset.itemsOnScreen = String(value.timings.items_on_screen ?? "");
        } else if (kind === "error") {
          finished = true;
          const message = (value && value.error) || "the turn failed";
          answer.fail(message);
          notice(message);
        }
        if (shown) user.node.scrollIntoView({ block: "start" });
        else scrollDown();
      }
      if (!finished) throw new Error("The connection to the service ended before the reply.");
    } catch (error) {
      answer.fail(error.message);
      notice(error.message);
    } finally {
      answer.setStatus("");
      answer.node.dataset.done = "true";
      setBusy(false);
      loadHistory();
    }
  }

  // ---- the composer: text, photo, voice -----------------------------------------------------------------------
  function attachPhoto(file) {
    if (!file || !file.type.startsWith("image/")) {
      notice("That file is not an image.");
      return;
    }
    state.photo = file;
    els.attachmentImage.src = URL.createObjectURL(file);
    els.attachment.hidden = false;
    setStatus("Photo attached: add words to refine it, then Send.");
    els.message.focus();
  }

  function removePhoto() {
    state.photo = null;
    els.attachment.hidden = true;
    els.attachmentImage.removeAttribute("src");
    els.photo.value = "";
    setStatus("");
  }

  els.composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = els.message.value;
    const photo = state.photo;
    if (!text.trim() && !photo) {
      els.message.focus();
      return;
    }
    els.message.value = "";
    removePhoto();
    sendTurn({ text, photo });
  });

  els.photo.addEventListener("change", () => attachPhoto(els.photo.files[0]));
  els.attachmentRemove.addEventListener("click", removePhoto);
  els.audio.addEventListener("change", () => {
    const file = els.audio.files[0];
    els.audio.value = "";
    if (file) sendTurn({ text: els.message.value, audio: file, audioName: file.name || "recording" });
  });

  document.addEventListener("dragover", (event) => {
    if ([...(event.dataTransfer?.items || [])].some((i) => i.kind === "file")) {
      event.preventDefault();
      document.body.classList.add("dropping");
    }
  });
  document.addEventListener("dragleave", (event) => {
    if (!event.relatedTarget) document.body.classList.remove("dropping");
  });
  document.addEventListener("drop", (event) => {
    document.body.classList.remove("dropping");
    const file = [...(event.dataTransfer?.files || [])][0];
    if (!file) return;
    event.preventDefault();
    if (file.type.startsWith("audio/")) sendTurn({ text: els.message.value, audio: file, audioName: file.name });
    else attachPhoto(file);
  });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])].find((f) => f.type.startsWith("image/"));
    if (file) {
      event.preventDefault();
      attachPhoto(file);
    }
  });

  function recordingType() {
    const types = ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus", "audio/ogg"];
    return types.find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t)) || "";
  }

  els.record.addEventListener("click", async () => {
    if (state.recorder) {
      state.recorder.stop();
      return;
    }
    if (!navigator.mediaDevices || !window.MediaRecorder) {
      notice("This browser cannot record here (a microphone needs https or localhost): upload an audio file instead.");
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      notice(`No microphone: ${error.message}. Upload an audio file instead.`);
      return;
    }
    const type = recordingType();
    const recorder = new MediaRecorder(stream, type ? { mimeType: type } : {});
    const chunks = [];
    recorder.addEventListener("dataavailable", (event) => event.data.size && chunks.push(event.data));
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((t) => t.stop());
      state.recorder = null;
      els.record.textContent = "Record";
      els.record.setAttribute("aria-pressed", "false");
      const mime = recorder.mimeType || type || "audio/webm";
      const blob = new Blob(chunks, { type: mime });
      setStatus("");
      if (blob.size) sendTurn({ text: els.message.value, audio: blob, audioName: mime.includes("ogg") ? "recording.ogg" : "recording.webm" });
    });
    state.recorder = recorder;
    recorder.start();
    els.record.textContent = "Stop and send";
    els.record.setAttribute("aria-pressed", "true");
    setStatus("Recording: speak, then press Stop and send.");
  });

  // ---- the rest ----------------------------------------------------------------------------------------------
  els.newConversation.addEventListener("click", newConversation);
  els.catalog.addEventListener("change", newConversation);
  els.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = els.key.value.trim();
    if (key) localStorage.setItem(KEY, key);
    else localStorage.removeItem(KEY);
    setStatus(key ? "Key saved." : "Key removed.");
    loadHistory();
  });
  els.key.value = localStorage.getItem(KEY) || "";

  if (window.matchMedia("(max-width: 720px)").matches) $("history-box").open = false; // room for the chat
  loadCatalogs().then(loadHistory);
})();
