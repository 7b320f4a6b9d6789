// The dashboard's one script: a live terminal on an agent's page. Everything else is htmx.
(function () {
  "use strict";
  const el = document.getElementById("terminal");
  if (!el) return;
  const name = el.dataset.agent;
  const controller = el.dataset.role === "controller";
  const status = document.getElementById("terminal-status");
  const term = new Terminal({ fontSize: 13, scrollback: 5000, disableStdin: !controller });
  const fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  window.agentboxTerminal = term; // for people debugging in the console, and for the browser test
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const role = controller ? "controller" : "observer";
  const ws = new WebSocket(scheme + location.host + "/ws/agents/" + name + "/attach?role=" + role);
  ws.binaryType = "arraybuffer";
  const say = (text) => { if (status) status.textContent = text; };
  const resize = () => {
    fit.fit();
    if (controller && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: "resize", rows: term.rows, cols: term.cols }));
    }
  };
  ws.onopen = () => { say(controller ? "connected (typing enabled)" : "connected (watching)"); resize(); };
  ws.onmessage = (e) => {
    if (typeof e.data === "string") {
      const msg = JSON.parse(e.data);
      if (msg.type === "exit") say("the agent exited with status " + msg.code);
      return;
    }
    term.write(new Uint8Array(e.data));
  };
  ws.onclose = () => { if (status && status.textContent.indexOf("exited") < 0) say("disconnected"); };
  const encoder = new TextEncoder();
  term.onData((d) => { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(d)); });
  window.addEventListener("resize", resize);
})();
