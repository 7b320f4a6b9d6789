// The dashboard's one script. It holds the session (in this origin's localStorage: never a
// cookie, which browsers would send to every port of this host) and sends it itself: with every
// htmx request, and as a WebSocket subprotocol for the live terminal. Pages opened by URL arrive
// as an empty shell and are fetched again with the session.
(function () {
  "use strict";
  const KEY = "agentbox_session";
  const session = () => localStorage.getItem(KEY);
  const signIn = () => {
    localStorage.removeItem(KEY);
    if (location.pathname !== "/login") location.replace("/login");
  };

  // History is not kept in localStorage (it would hold page contents); going back reloads the
  // page, which then loads through the shell like any other.
  htmx.config.historyCacheSize = 0;
  htmx.config.refreshOnHistoryMiss = true;

  // Every htmx request (navigation with hx-boost, polling, forms) carries the session.
  // Without one (the sign-in page), the navigation's live parts do not ask at all.
  document.addEventListener("htmx:configRequest", (e) => {
    const s = session();
    if (s) e.detail.headers["Authorization"] = "Bearer " + s;
    else if (e.detail.elt && e.detail.elt.closest && e.detail.elt.closest("nav")) e.preventDefault();
  });
  document.addEventListener("htmx:responseError", (e) => {
    if (e.detail.xhr && e.detail.xhr.status === 401) signIn();
  });

  // The live terminal of an agent's page (one at a time; closed when the page changes).
  let current = null;
  const terminal = () => {
    const el = document.getElementById("terminal");
    if (!el || el.dataset.started) return;
    el.dataset.started = "1";
    if (current) current();
    const name = el.dataset.agent;
    const controller = el.dataset.role === "controller";
    const status = document.getElementById("terminal-status");
    const term = new Terminal({ fontSize: 13, scrollback: 5000, disableStdin: !controller });
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open(el);
    window.agentboxTerminal = term; // for people debugging in the console, and for the browser test
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const role = controller ? "controller" : "observer";
    const ws = new WebSocket(scheme + location.host + "/ws/agents/" + name + "/attach?role=" + role,
      ["agentbox", "agentbox.auth." + session()]);
    ws.binaryType = "arraybuffer";
    const say = (text) => { if (status) status.textContent = text; };
    // Opening the page changes nothing for the agent: the terminal is drawn at the agent's size.
    // A controller makes the agent its own size only when it takes the keyboard (focuses the
    // terminal), and keeps doing so as its window changes until someone else resizes the agent.
    let holding = false;
    // Sizes this page gave the agent: the server's word of one of them, arriving late, is our
    // own resize coming back, not someone else taking the agent.
    const sent = new Set();
    const resize = () => {
      if (!holding || ws.readyState !== WebSocket.OPEN) return;
      fit.fit();
      sent.add(term.rows + "x" + term.cols);
      ws.send(JSON.stringify({ type: "resize", rows: term.rows, cols: term.cols }));
    };
    const take = () => {
      if (!controller || holding) return;
      holding = true;
      el.dataset.holding = "1";
      say("connected (typing; the agent has this terminal's size)");
      resize();
    };
    term.textarea.addEventListener("focus", take);
    ws.onopen = () => say(controller ? "connected (click the terminal to type)" : "connected (watching)");
    ws.onmessage = (e) => {
      if (typeof e.data === "string") {
        const msg = JSON.parse(e.data);
        if (msg.type === "exit") say("the agent exited with status " + msg.code);
        if (msg.type === "size" && (msg.rows !== term.rows || msg.cols !== term.cols)) {
          if (holding && sent.has(msg.rows + "x" + msg.cols)) return;
          if (holding) {
            sent.clear();
            holding = false;
            delete el.dataset.holding;
            say("connected (resized elsewhere; click the terminal to take it back)");
          }
          term.resize(msg.cols, msg.rows);
        }
        return;
      }
      term.write(new Uint8Array(e.data));
    };
    ws.onclose = () => { if (status && status.textContent.indexOf("exited") < 0) say("disconnected"); };
    const encoder = new TextEncoder();
    term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(d)); });
    window.addEventListener("resize", resize);
    current = () => { window.removeEventListener("resize", resize); ws.close(); term.dispose(); };
  };
  document.addEventListener("htmx:load", terminal);

  // Ticked agents in the list stay ticked as it refreshes; a bulk action clears them.
  const ticked = new Set();
  const boxes = () => document.querySelectorAll("#agents input.sel");
  document.addEventListener("change", (e) => {
    const box = e.target.closest && e.target.closest("input.sel, input#sel-all");
    if (!box) return;
    const all = box.id === "sel-all";
    for (const b of all ? boxes() : [box]) {
      b.checked = box.checked;
      if (box.checked) ticked.add(b.value); else ticked.delete(b.value);
    }
  });
  document.addEventListener("htmx:afterSwap", (e) => {
    if (e.detail.target && e.detail.target.id === "bulk-result") {
      ticked.clear();
      const all = document.getElementById("sel-all");
      if (all) all.checked = false;
    }
    for (const b of boxes()) b.checked = ticked.has(b.value);
  });
  document.addEventListener("htmx:beforeSwap", (e) => {
    if (e.detail.target === document.body && current) { current(); current = null; }
  });

  // Downloads (artifacts) are fetched with the session and saved from memory.
  document.addEventListener("click", async (e) => {
    const a = e.target.closest("a[data-download]");
    const out = e.target.closest("a[data-logout]");
    if (out) {
      e.preventDefault();
      signIn();
      return;
    }
    if (!a) return;
    e.preventDefault();
    const r = await fetch(a.getAttribute("href"), { headers: { Authorization: "Bearer " + session() } });
    if (r.status === 401) return signIn();
    const url = URL.createObjectURL(await r.blob());
    const save = document.createElement("a");
    save.href = url;
    save.download = a.dataset.download.split("/").pop();
    document.body.appendChild(save);
    save.click();
    save.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }, true);

  // An agent's port opens in a new tab on an origin of its own (PORT-NAME.localhost, never this
  // one, whose storage holds the session): a one-time ticket, fetched with the session, is
  // posted there in a form, and becomes that origin's own cookie. No credential in a URL.
  const openPort = async (name, port) => {
    const r = await fetch("/api/v1/agents/" + name + "/ports/" + port + "/ticket", {
      method: "POST", headers: { Authorization: "Bearer " + session() },
    });
    if (r.status === 401) return signIn();
    const out = document.getElementById("ports");
    if (!r.ok) {
      if (out) out.insertAdjacentText("beforeend", (await r.json()).error || "cannot open the port");
      return;
    }
    const t = await r.json();
    const form = document.createElement("form");
    form.method = "POST";
    form.target = "_blank";
    form.action = location.protocol + "//" + t.host + (location.port ? ":" + location.port : "") + "/.agentbox/enter";
    const field = document.createElement("input");
    field.type = "hidden";
    field.name = "ticket";
    field.value = t.ticket;
    form.appendChild(field);
    document.body.appendChild(form);
    form.submit();
    form.remove();
  };
  document.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-open-port]");
    if (b) openPort(b.dataset.agent, b.dataset.openPort);
  });
  document.addEventListener("submit", (e) => {
    const f = e.target.closest("form[data-open-port-form]");
    if (!f) return;
    e.preventDefault();
    openPort(f.dataset.agent, f.elements.port.value);
  });

  const start = async () => {
    // The answer to signing in: keep the session, go to the dashboard.
    const given = document.querySelector("meta[name=agentbox-session]");
    if (given) {
      localStorage.setItem(KEY, given.content);
      location.replace("/");
      return;
    }
    if (!document.body.hasAttribute("data-shell")) {
      terminal();
      return;
    }
    if (!session()) return signIn();
    const r = await fetch(location.pathname + location.search, {
      headers: { Authorization: "Bearer " + session(), Accept: "text/html" },
    });
    if (r.status === 401) return signIn();
    const doc = new DOMParser().parseFromString(await r.text(), "text/html");
    document.title = doc.title;
    for (const attr of doc.body.attributes) document.body.setAttribute(attr.name, attr.value);
    document.body.removeAttribute("data-shell");
    document.body.replaceChildren(...doc.body.childNodes);
    htmx.process(document.body);
    terminal();
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
