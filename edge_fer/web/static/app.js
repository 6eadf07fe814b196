// The live page: the MJPEG picture, the state and events over server-sent events. Plain JS, no build step.
"use strict";

const MAX_EVENTS = 20;
let colors = {};

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;  // text only: nothing from the server is parsed as HTML
  return node;
}

function percent(p) {
  return Math.round(p * 100) + "%";
}

function caption(face) {
  return face.unsure ? "unsure (" + face.unsure + ")" : face.emotion + " " + percent(face.confidence);
}

function renderFaces(faces) {
  const box = document.getElementById("faces");
  box.replaceChildren();
  if (!faces.length) {
    box.append(el("p", "empty", "no face in view"));
    return;
  }
  for (const face of faces) {
    const card = el("div", "face");
    card.dataset.emotion = face.emotion;
    card.style.borderLeftColor = colors[face.emotion] || "#888";
    card.append(el("div", "title", "#" + face.track_id + " " + caption(face)));
    for (const [name, p] of Object.entries(face.scores)) {
      const bar = el("div", "bar");
      const track = el("div", "track");
      const fill = el("div", "fill");
      fill.style.width = (p * 100).toFixed(1) + "%";
      fill.style.background = colors[name] || "#888";
      track.append(fill);
      bar.append(el("span", "name", name), track, el("span", "value", p.toFixed(2)));
      card.append(bar);
    }
    box.append(card);
  }
}

function badge(id, text, kind) {
  const node = document.getElementById(id);
  node.textContent = text;
  node.className = "badge " + kind;
}

function renderState(state) {
  if (!state.device && state.device !== "") return;
  document.getElementById("device").textContent = state.device;
  badge("camera", "camera " + state.camera, state.camera === "ok" ? "good" : "bad");
  const mqtt = state.mqtt || {};
  if (!mqtt.enabled) badge("mqtt", "MQTT off", "off");
  else badge("mqtt", "MQTT " + mqtt.state, mqtt.connected ? "good" : "bad");
  document.getElementById("figures").textContent =
    state.fps.toFixed(1) + " fps · " + state.frames + " frames · dropped " + state.dropped_frames +
    " frames, " + state.dropped_events + " events";
  renderFaces(state.faces || []);
}

function addEvent(doc) {
  const list = document.getElementById("events");
  const item = el("li");
  item.dataset.type = doc.type;
  const time = new Date(doc.ts).toLocaleTimeString();
  let text = " " + doc.type + " #" + doc.track_id + " " + doc.emotion + " " + percent(doc.confidence);
  if (doc.type === "end" && doc.duration !== undefined) text += " after " + doc.duration.toFixed(1) + " s";
  if (doc.latency_ms !== undefined) text += " (" + doc.latency_ms + " ms)";
  item.append(el("span", "time", time), document.createTextNode(text));
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function toLogin() {
  window.location.href = "login";
}

function watchPicture() {
  const img = document.getElementById("live");
  img.addEventListener("error", () => {
    // The stream ended (a restart, a timeout): ask again in a moment.
    setTimeout(() => { img.src = "stream.mjpg?t=" + Date.now(); }, 2000);
  });
}

let lastEvent = 0;

function listen() {
  const source = new EventSource("events?after=" + lastEvent);
  source.addEventListener("state", (e) => renderState(JSON.parse(e.data)));
  source.addEventListener("track", (e) => {
    lastEvent = Number(e.lastEventId) || lastEvent;
    addEvent(JSON.parse(e.data));
  });
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused for good: the login ran out, or the server went away. Ask the state what happened.
      fetch("api/state").then((r) => {
        if (r.status === 401) toLogin();
        else setTimeout(listen, 2000);
      }, () => setTimeout(listen, 2000));
    }
  });
}

async function start() {
  watchPicture();
  const response = await fetch("api/state");
  if (response.status === 401) {
    toLogin();
    return;
  }
  const state = await response.json();
  colors = state.colors || {};
  document.getElementById("logout").hidden = !state.login;
  renderState(state);
  for (const doc of state.events || []) addEvent(doc);
  lastEvent = state.event_no;
  listen();
}

document.addEventListener("DOMContentLoaded", start);
