/* KVM-VDI live channel: one websocket per page to /live, JSON messages
 * {topic, data, at} dispatched to handlers registered with Live.on(topic, fn).
 * Reconnects with exponential back-off (1 s .. 30 s, with jitter); after a
 * reconnect, Live.onReconnect handlers re-read current state, because messages
 * sent while the socket was down are not replayed. No polling anywhere. */
(function () {
  "use strict";

  var CLOSE_SESSION_ENDED = 4401;
  var CLOSE_PASSWORD_CHANGE = 4403;
  var handlers = {};
  var reconnectHandlers = [];
  var socket = null;
  var attempt = 0;
  var everConnected = false;
  var stopped = false;
  var timer = null;
  // The dashboard's own message about its database: the badge says "degraded" while it is away.
  var degraded = false;

  function indicator() {
    return document.getElementById("live-indicator");
  }

  function setState(state, text) {
    var el = indicator();
    if (!el) return;
    el.dataset.state = state;
    el.title = text;
    var label = el.querySelector(".live-text");
    if (label) label.textContent = text;
    if (state === "ended") {
      el.setAttribute("href", "/login?next=" + encodeURIComponent(location.pathname));
    } else {
      el.removeAttribute("href");
    }
  }

  function call(fn, data, message) {
    try {
      fn(data, message);
    } catch (err) {
      console.error("live handler failed", err);
    }
  }

  function serviceChanged(data) {
    degraded = data.database === "unavailable";
    if (degraded) {
      setState("degraded", gettext("Degraded: the database is unavailable"));
    } else if (socket !== null && socket.readyState === WebSocket.OPEN) {
      setState("connected", gettext("Live"));
    }
  }

  function dispatch(message) {
    if (message.topic === "service") serviceChanged(message.data || {});
    (handlers[message.topic] || []).forEach(function (fn) { call(fn, message.data || {}, message); });
    (handlers["*"] || []).forEach(function (fn) { call(fn, message.data || {}, message); });
  }

  function socketUrl() {
    return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/live";
  }

  function schedule() {
    if (stopped || timer !== null) return;
    var delay = Math.min(30000, 1000 * Math.pow(2, attempt)) * (0.5 + Math.random() / 2);
    attempt += 1;
    var seconds = Math.max(1, Math.round(delay / 1000));
    if (degraded) {
      setState("degraded", ngettext(
        "Degraded: the database is unavailable (retrying in {n} second)",
        "Degraded: the database is unavailable (retrying in {n} seconds)", seconds));
    } else {
      setState("offline", ngettext("Offline, reconnecting in {n} second", "Offline, reconnecting in {n} seconds", seconds));
    }
    timer = setTimeout(function () { timer = null; connect(); }, delay);
  }

  function connect() {
    if (stopped || socket !== null) return;
    setState("connecting", gettext("Connecting…"));
    var ws = new WebSocket(socketUrl());
    socket = ws;
    ws.onopen = function () {
      setState(degraded ? "degraded" : "connected", degraded ? gettext("Degraded: the database is unavailable") : gettext("Live"));
      if (everConnected) reconnectHandlers.forEach(function (fn) { call(fn); });
      everConnected = true;
    };
    ws.onmessage = function (event) {
      var message;
      try {
        message = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      if (message && typeof message.topic === "string") {
        // A real session, checked against the database: the back-off starts over, and the
        // database answers (a degraded dashboard sends no hello).
        if (message.topic === "hello") {
          attempt = 0;
          if (degraded) serviceChanged({ database: "available" });
        }
        dispatch(message);
      }
    };
    ws.onclose = function (event) {
      socket = null;
      if (event.code === CLOSE_SESSION_ENDED || event.code === CLOSE_PASSWORD_CHANGE) {
        stopped = true;
        setState("ended", event.code === CLOSE_SESSION_ENDED ? gettext("Session ended: log in again") : gettext("Change your password"));
        return;
      }
      schedule();
    };
  }

  function reconnectNow() {
    if (stopped || socket !== null) return;
    if (timer !== null) {
      clearTimeout(timer);
      timer = null;
    }
    connect();
  }

  window.Live = {
    on: function (topic, fn) {
      (handlers[topic] = handlers[topic] || []).push(fn);
    },
    onReconnect: function (fn) {
      reconnectHandlers.push(fn);
    },
    get connected() {
      return socket !== null && socket.readyState === WebSocket.OPEN;
    },
  };

  // Back in view or back online: no need to wait for the back-off timer.
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") reconnectNow();
  });
  window.addEventListener("online", reconnectNow);

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", connect);
  } else {
    connect();
  }
})();
