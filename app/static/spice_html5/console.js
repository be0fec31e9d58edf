// The HTML5 console: spice-html5 (./lib, the npm package) plus what a desktop user expects
// around it: reconnects with back-off (a fresh ticket and password each time), clear messages,
// key combinations the browser would swallow, fit-to-window, full screen and a heartbeat hook.
// Never a browser prompt(): every failure ends in a message on the page.

import * as SpiceHtml5 from './lib/main.js';
import * as Messages from './lib/spicemsg.js';
import { Constants } from './lib/enums.js';
import { SpiceConn } from './lib/spiceconn.js';

// spice-html5 gives only the main channel an error handler: a display or inputs channel that
// fails to link (password changed meanwhile, time-out) throws an uncaught error and leaves a
// "connected" page without a picture. Route those failures to the main channel's handler.
const reportError = SpiceConn.prototype.report_error;
SpiceConn.prototype.report_error = function report(error) {
  if (this.onerror === undefined && this.parent && this.parent.onerror) {
    this.log_err(error.toString());
    this.parent.onerror(error);
    return;
  }
  reportError.call(this, error);
};

// PC/AT set-1 scancodes; 0x1xx means the 0xE0-prefixed (extended) key.
const KEY = {
  ctrl: 0x1d, alt: 0x38, del: 0x153, backspace: 0x0e, tab: 0x0f, win: 0x15b,
  esc: 0x01, print: 0x137,
};
const fkey = (n) => (n <= 10 ? 0x3a + n : 0x56 + (n - 10));
const COMBOS = {
  'ctrl-alt-del': [KEY.ctrl, KEY.alt, KEY.del],
  'ctrl-alt-backspace': [KEY.ctrl, KEY.alt, KEY.backspace],
  'alt-tab': [KEY.alt, KEY.tab],
  'win': [KEY.win],
  'ctrl-esc': [KEY.ctrl, KEY.esc],
  'alt-f4': [KEY.alt, fkey(4)],
  'print': [KEY.print],
};
for (let n = 1; n <= 12; n++) COMBOS[`ctrl-alt-f${n}`] = [KEY.ctrl, KEY.alt, fkey(n)];

// SPICE sends a scancode as little-endian bytes: E0 53 is 0x53e0, its release E0 D3 is 0xd3e0.
const pressCode = (key) => (key < 0x100 ? key : 0xe0 | ((key - 0x100) << 8));
const releaseCode = (key) => (key < 0x100 ? key | 0x80 : 0x80e0 | ((key - 0x100) << 8));

// Close codes the dashboard's proxy uses (app/proxy/sessions.py), and what the page does.
const CLOSE_CODES = {
  4401: { retry: 'now', title: gettext('Console ticket expired'),
          text: gettext('The console ticket ran out before the connection was made.') },
  4403: { retry: 'never', title: gettext('Wrong desktop'), text: gettext('This console ticket belongs to another desktop.') },
  4404: { retry: 'never', state: 'stopped', title: gettext('Desktop stopped'),
          text: gettext('The desktop was shut down or stopped. Start it again, then reconnect.') },
  4408: { retry: 'never', title: gettext('Disconnected after inactivity'),
          text: gettext('The console was idle for too long and was closed.') },
  4409: { retry: 'never', title: gettext('Session time limit reached'),
          text: gettext('The console reached its maximum session length.') },
  4410: { retry: 'never', state: 'stopped', title: gettext('Console closed by an administrator'),
          text: gettext('An administrator ended this console session.') },
  4429: { retry: 'backoff', title: gettext('Too many connections'),
          text: gettext('Too many consoles are open right now.') },
  4502: { retry: 'backoff', title: gettext('Desktop unreachable'),
          text: gettext("The desktop's display cannot be reached.") },
  // A dashboard replica is stopping: the next connection goes through another one.
  4307: { retry: 'now', title: gettext('Dashboard restarting'), text: gettext('The dashboard is restarting.') },
  4503: { retry: 'backoff', title: gettext('Server not answering'),
          text: gettext('The server running this desktop stopped answering. The console reconnects once it is back.') },
};
const MAX_AUTO_RECONNECTS = 8;
const MAX_QUICK_RETRIES = 2;

class SpiceConsole {
  constructor(root) {
    this.root = root;
    this.openUrl = root.dataset.openUrl;
    this.screen = document.getElementById('spice-screen');
    this.area = document.getElementById('spice-area');
    this.status = document.getElementById('console-status');
    this.overlay = document.getElementById('console-overlay');
    this.sc = null;
    this.generation = 0;
    this.attempt = 0;
    this.quickRetries = 0;
    this.connected = false;
    this.scale = true;
    this.reconnectTimer = null;
    this.countdownTimer = null;
    this.decideTimer = null;
    this.resizeTimer = null;
    this.failure = null;
    this.heartbeat = null;
    this.heartbeatTimer = null;
    const url = root.dataset.heartbeatUrl;
    const seconds = Number(root.dataset.heartbeatInterval || 0);
    if (url && seconds > 0) this.setHeartbeat(() => this.postHeartbeat(url), seconds * 1000);
  }

  // -- connecting ------------------------------------------------------------------------

  async connect() {
    this.teardown();
    const gen = this.generation;
    this.setState(this.attempt ? 'reconnecting' : 'connecting', this.attempt ? gettext('Reconnecting…') : gettext('Connecting…'));
    const answer = await window.KvmVdi.api('POST', this.openUrl);
    if (gen !== this.generation) return;
    if (answer.status === 0) {
      this.lost(gettext('The dashboard cannot be reached.'));
      return;
    }
    if (!answer.ok) {
      this.grantRefused(answer.status, answer.data);
      return;
    }
    const grant = answer.data;
    const scheme = window.location.protocol === 'https:' ? 'wss://' : 'ws://';
    const uri = scheme + window.location.host + grant.websocket_path;
    this.failure = { error: null, code: null };
    try {
      this.sc = new SpiceHtml5.SpiceMainConn({
        uri,
        screen_id: this.screen.id,
        password: grant.password,
        onerror: (error) => this.spiceFailed(gen, { error: error && error.message }),
        onsuccess: () => this.spiceConnected(gen),
        onagent: (sc) => this.agentConnected(gen, sc),
      });
    } catch (error) {
      this.lost(String((error && error.message) || error));
      return;
    }
    this.sc.ws.addEventListener('close', (event) => this.spiceFailed(gen, { code: event.code }));
  }

  reconnectNow() {
    this.attempt = 0;
    this.quickRetries = 0;
    this.connect();
  }

  teardown() {
    this.generation += 1;
    for (const timer of ['reconnectTimer', 'countdownTimer', 'decideTimer', 'resizeTimer']) {
      if (this[timer]) {
        clearTimeout(this[timer]);
        clearInterval(this[timer]);
        this[timer] = null;
      }
    }
    this.stopHeartbeat();
    if (this.sc) {
      try {
        this.sc.stop();
      } catch (error) {
        console.warn('console: stopping the SPICE connection failed', error);
      }
      this.sc = null;
    }
    this.screen.replaceChildren();
    this.connected = false;
  }

  spiceConnected(gen) {
    if (gen !== this.generation) return;
    this.connected = true;
    this.attempt = 0;
    this.quickRetries = 0;
    this.hideOverlay();
    this.setState('connected', gettext('Connected'));
    this.startHeartbeat();
  }

  agentConnected(gen, sc) {
    if (gen !== this.generation) return;
    this.agent = sc;
    this.requestGuestResize();
  }

  // -- failures --------------------------------------------------------------------------

  // spice-html5 reports an error and the websocket its close code separately (in either
  // order): collect both for a moment, then decide once.
  spiceFailed(gen, part) {
    if (gen !== this.generation || !this.failure) return;
    if (part.error) this.failure.error = part.error;
    if (part.code) this.failure.code = part.code;
    if (!this.decideTimer) this.decideTimer = setTimeout(() => this.decide(gen), 100);
  }

  decide(gen) {
    this.decideTimer = null;
    if (gen !== this.generation) return;
    const { error, code } = this.failure;
    const wasConnected = this.connected;
    this.teardown();
    const known = CLOSE_CODES[code];
    if (known) {
      if (known.retry === 'now' && this.quickRetries < MAX_QUICK_RETRIES) {
        this.quickRetries += 1;
        this.connect();
      } else if (known.retry === 'backoff') {
        this.lost(known.text, known.title);
      } else {
        this.stopped(known.title, known.text, known.state || 'error');
      }
      return;
    }
    if (error === 'Permission denied.') { // i18n-ignore: spice-html5's error, not shown
      // The password changed between fetching and linking (another console opened): try anew.
      if (this.quickRetries < MAX_QUICK_RETRIES) {
        this.quickRetries += 1;
        this.connect();
      } else {
        this.stopped(gettext('Password refused'),
          gettext('The desktop refused the console password. Another console may have been opened meanwhile.'));
      }
      return;
    }
    if (code === 1000 && wasConnected) {
      this.stopped(gettext('Disconnected'), gettext('The desktop closed the connection; another console may have taken over.'));
      return;
    }
    this.lost();
  }

  grantRefused(status, body) {
    const message = body && body.message;
    if (status === 401) {
      this.stopped(gettext('Logged out'), gettext('Your dashboard session has ended. Log in again, then reopen the console.'));
    } else if (status === 409) {
      this.stopped(gettext('Desktop stopped'), message || gettext('The desktop is not running.'), 'stopped');
    } else if (status >= 500) {
      this.lost(message || gettext('The desktop cannot be reached right now.'), gettext('Desktop unavailable'));
    } else {
      this.stopped(gettext('Console not available'), message || gettext('The dashboard answered {status}.', { status }));
    }
  }

  lost(text, title) {
    this.attempt += 1;
    if (this.attempt > MAX_AUTO_RECONNECTS) {
      this.stopped(title || gettext('Connection lost'), text || gettext('The connection to the desktop was lost.'));
      return;
    }
    const delay = Math.min(30, 2 ** (this.attempt - 1));
    let left = delay;
    const body = (text || gettext('The connection to the desktop was lost.'));
    this.showCountdown(title, body, left);
    this.countdownTimer = setInterval(() => {
      left -= 1;
      if (left > 0) {
        this.showCountdown(title, body, left);
      }
    }, 1000);
    this.reconnectTimer = setTimeout(() => this.connect(), delay * 1000);
  }

  showCountdown(title, body, seconds) {
    this.setState('reconnecting', ngettext('Reconnecting in {n} second', 'Reconnecting in {n} seconds', seconds));
    const countdown = ngettext('Reconnecting in {n} second…', 'Reconnecting in {n} seconds…', seconds);
    this.showOverlay(title || gettext('Connection lost'), `${body} ${countdown}`, gettext('Reconnect now'));
  }

  stopped(title, text, state = 'error') {
    this.setState(state, title);
    this.showOverlay(title, text, gettext('Reconnect'));
  }

  // -- page state ------------------------------------------------------------------------

  setState(state, label) {
    this.status.dataset.state = state;
    this.status.textContent = label;
    document.dispatchEvent(new CustomEvent('kvmvdi:console-state', { detail: { state, label } }));
  }

  showOverlay(title, text, button) {
    document.getElementById('overlay-title').textContent = title;
    document.getElementById('overlay-text').textContent = text;
    document.getElementById('overlay-reconnect').textContent = button;
    this.overlay.hidden = false;
  }

  hideOverlay() {
    this.overlay.hidden = true;
  }

  // -- keys ------------------------------------------------------------------------------

  sendCombo(name) {
    const keys = COMBOS[name];
    const inputs = this.sc && this.sc.inputs;
    if (!keys || !inputs || inputs.state !== 'ready') return false;
    const send = (type, Message, code) => {
      const key = new Message();
      key.code = code;
      const msg = new Messages.SpiceMiniData();
      msg.build_msg(type, key);
      inputs.send_msg(msg);
    };
    for (const key of keys) send(Constants.SPICE_MSGC_INPUTS_KEY_DOWN, Messages.SpiceMsgcKeyDown, pressCode(key));
    for (const key of [...keys].reverse()) {
      send(Constants.SPICE_MSGC_INPUTS_KEY_UP, Messages.SpiceMsgcKeyUp, releaseCode(key));
    }
    this.focusDesktop();
    return true;
  }

  focusDesktop() {
    const canvas = this.screen.querySelector('canvas');
    if (canvas) canvas.focus();
  }

  // -- size ------------------------------------------------------------------------------

  fit() {
    const canvas = this.screen.querySelector('canvas');
    if (!canvas || !canvas.width || !canvas.height) return;
    const width = this.area.clientWidth;
    const height = this.area.clientHeight;
    let scale = 1;
    if (this.scale) scale = Math.min(width / canvas.width, height / canvas.height);
    // A CSS transform keeps the canvas's own coordinates, so mouse positions stay right.
    this.screen.style.transform = scale === 1 ? '' : `scale(${scale})`;
    this.screen.style.left = `${Math.max(0, (width - canvas.width * scale) / 2)}px`;
    this.screen.style.top = `${Math.max(0, (height - canvas.height * scale) / 2)}px`;
    this.area.classList.toggle('scale-off', !this.scale);
  }

  // With the SPICE agent in the guest, the desktop takes the window's size instead of being scaled.
  requestGuestResize() {
    if (this.resizeTimer) clearTimeout(this.resizeTimer);
    this.resizeTimer = setTimeout(() => {
      this.resizeTimer = null;
      const sc = this.agent;
      if (!sc || sc !== this.sc || !this.sc.agent_connected) return;
      window.spice_connection = sc;
      const width = this.area.clientWidth - (this.area.clientWidth % 8);
      const height = this.area.clientHeight - (this.area.clientHeight % 8);
      sc.resize_window(0, width, height, 32, 0, 0);
    }, 200);
  }

  toggleScale() {
    this.scale = !this.scale;
    document.getElementById('toggle-scale').setAttribute('aria-pressed', String(this.scale));
    this.fit();
    this.focusDesktop();
  }

  async toggleFullscreen() {
    try {
      if (document.fullscreenElement) {
        await document.exitFullscreen();
      } else {
        await this.root.requestFullscreen();
        // Keyboard Lock lets Alt+Tab, the Windows key and Esc reach the desktop (Chromium).
        if (navigator.keyboard && navigator.keyboard.lock) await navigator.keyboard.lock();
      }
    } catch (error) {
      console.warn('console: full screen refused', error);
    }
    this.focusDesktop();
  }

  // -- heartbeat -------------------------------------------------------------------------

  // The portal calls setHeartbeat(fn, ms) (or sets data-heartbeat-url/-interval) to keep its
  // lease alive while the console is connected.
  setHeartbeat(fn, intervalMs) {
    this.heartbeat = fn && intervalMs > 0 ? { fn, intervalMs } : null;
    this.stopHeartbeat();
    if (this.connected) this.startHeartbeat();
  }

  startHeartbeat() {
    if (!this.heartbeat || this.heartbeatTimer) return;
    const { fn, intervalMs } = this.heartbeat;
    this.heartbeatTimer = setInterval(() => {
      Promise.resolve()
        .then(fn)
        .catch((error) => console.warn('console: heartbeat failed', error));
    }, intervalMs);
  }

  stopHeartbeat() {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  async postHeartbeat(url) {
    const answer = await window.KvmVdi.api('POST', url);
    if (!answer.ok) throw new Error(`heartbeat answered ${answer.status}`); // i18n-ignore: logged, not shown
  }
}

function start() {
  const root = document.getElementById('console');
  const console_ = new SpiceConsole(root);
  window.kvmvdiConsole = console_;

  document.getElementById('send-cad').addEventListener('click', () => console_.sendCombo('ctrl-alt-del'));
  document.getElementById('keys-list').addEventListener('click', (event) => {
    const item = event.target.closest('[data-combo]');
    if (item) console_.sendCombo(item.dataset.combo);
  });
  document.getElementById('toggle-scale').addEventListener('click', () => console_.toggleScale());
  document.getElementById('toggle-fullscreen').addEventListener('click', () => console_.toggleFullscreen());
  document.getElementById('overlay-reconnect').addEventListener('click', () => console_.reconnectNow());
  document.addEventListener('fullscreenchange', () => {
    root.classList.toggle('fullscreen', Boolean(document.fullscreenElement));
    if (!document.fullscreenElement && navigator.keyboard && navigator.keyboard.unlock) navigator.keyboard.unlock();
  });

  new MutationObserver(() => console_.fit()).observe(console_.screen, {
    childList: true, subtree: true, attributes: true, attributeFilter: ['width', 'height'],
  });
  new ResizeObserver(() => {
    console_.fit();
    console_.requestGuestResize();
  }).observe(console_.area);

  console_.connect();
}

start();
