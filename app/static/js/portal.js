// Client portal: connect to a pool's desktop, download a .vv, power actions,
// heartbeats for held desktops, and live tile updates over the websocket.
const message = document.getElementById("portal-message");

function show(text, kind = "info") {
  message.textContent = text;
  message.className = `alert alert-${kind}`;
}

// {ok, status, data, message}: api.js turns a refusal or a missing answer into the message.
function post(url, body) {
  return window.KvmVdi.api("POST", url, body || {});
}

function failoverText(failover) {
  if (!failover) return "";
  if (failover.protocol === "rdp") {
    const target = failover.domain
      ? gettext("Use Remote Desktop to {host} (domain {domain}).", { host: failover.host, domain: failover.domain })
      : gettext("Use Remote Desktop to {host}.", { host: failover.host });
    return " " + target;
  }
  return " " + gettext("Use VMware Horizon: server {server}, pool {pool}.", { server: failover.server, pool: failover.pool });
}

// `stopped()` true: the user chose to stay on the pool tiles; no console is opened then.
async function desktopFor(poolId, stopped = () => false) {
  for (let attempt = 0; attempt < 90; attempt++) {
    const { status, data, message: refusal } = await post(`/client/pools/${poolId}/desktop`);
    if (stopped()) return null;
    if (status === 202) {
      show(data.desktop ? gettext("Your desktop {name} is starting…", { name: data.desktop.name }) : gettext("Your desktop is starting…"));
      // The answer comes once the desktop was started: look again soon, then as advised.
      const wait = attempt === 0 ? 250 : (data.retry_after || 1) * 1000;
      await new Promise((resolve) => setTimeout(resolve, wait));
      continue;
    }
    if (data.status === "ready") return data;
    if (data.status === "failover") { show(gettext("The desktops are unavailable.") + failoverText(data.failover), "warning"); return null; }
    show((refusal || data.message || gettext("The desktop could not be handed out.")) + failoverText(data.failover), "warning");
    return null;
  }
  show(gettext("The desktop did not start in time. Try again."), "danger");
  return null;
}

// Right after log-in, a user with one pool (or one desktop) may go straight to their desktop
// (the page names the pool); "Show all pools instead" keeps them on the tiles.
async function straightToDesktop() {
  // A reload or the way back from the console shows the tiles, never the log-in's redirect again.
  if (window.location.search) window.history.replaceState(null, "", "/client");
  const banner = document.getElementById("straight");
  if (!banner) return;
  let cancelled = false;
  const cancel = document.getElementById("straight-cancel");
  cancel.addEventListener("click", () => {
    cancelled = true;
    banner.remove();
    message.className = "alert d-none";
    document.querySelector("#pool-tiles button[data-action]")?.focus();
  });
  cancel.focus();
  const desktop = await desktopFor(banner.dataset.poolId, () => cancelled);
  if (cancelled) return;
  banner.remove();
  if (desktop) window.location.assign(desktop.console_url);
}
straightToDesktop();

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action], button[data-power]");
  if (!button) return;
  if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
  button.disabled = true;
  try {
    if (button.dataset.power) {
      const { status, data, message: refusal } = await post(`/client/desktops/${button.dataset.vmId}/power`, { action: button.dataset.power });
      show(status === 202 ? gettext("Desktop: {state}.", { state: i18n.stateLabel(data.state) }) : refusal || data.message, status === 202 ? "success" : "danger");
      return;
    }
    const desktop = await desktopFor(button.dataset.poolId);
    if (!desktop) return;
    if (button.dataset.action === "connect") {
      window.location.assign(desktop.console_url);
    } else {
      const form = document.getElementById("vv-form");
      form.action = `/client/desktops/${desktop.desktop.vm_id}/vv`;
      form.submit();
      show(gettext("Opening {name} in remote-viewer.", { name: desktop.desktop.name }), "success");
    }
  } finally {
    button.disabled = false;
  }
});

function renderTiles(pools) {
  for (const pool of pools) {
    const tile = document.getElementById(`pool-${pool.id}`);
    if (!tile) { window.location.reload(); return; }
    tile.querySelector("[data-free]").textContent = i18n.formatNumber(pool.free);
    tile.querySelector("[data-size]").textContent = i18n.formatNumber(pool.size);
    tile.querySelector("[data-maintenance]").classList.toggle("d-none", !pool.maintenance);
        const desktop = tile.querySelector("[data-desktop]");
    desktop.replaceChildren();
    if (pool.desktop) {
      // "Your desktop: <strong>name</strong> (state)", the name in bold as the server renders it.
      const [before, after] = gettext("Your desktop: {name} ({state})", { state: i18n.stateLabel(pool.desktop.state) }).split("{name}");
      const name = document.createElement("strong");
      name.textContent = pool.desktop.name;
      desktop.append(before, name, after || "");
    }
  }
}

async function refresh() {
  const { ok, data } = await window.KvmVdi.api("GET", "/client/pools.json");
  if (!ok) return [];
  renderTiles(data.pools);
  return data.pools;
}

// Heartbeats keep the leases of held desktops while the portal is open.
async function heartbeats() {
  const pools = await refresh();
  for (const pool of pools) {
    if (pool.desktop) await post(`/client/desktops/${pool.desktop.vm_id}/heartbeat`);
  }
}
setInterval(heartbeats, 30000);

function live() {
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${window.location.host}/live`);
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.topic === "pool" || message.topic === "lease") refresh();
  };
  socket.onclose = () => setTimeout(live, 5000);
}
live();
