/* gridgov map pages: our own layers as vector tiles, the phone page's actions, the wall
   screen's polling. Loaded after Leaflet and Leaflet.VectorGrid (all served locally). */
"use strict";

var GRIDGOV_STATES = {
  reported: ["已上报", "#597ef7"], registered: ["已立案", "#2f54eb"],
  dispatched: ["已派遣", "#fa8c16"], accepted: ["已接单", "#13c2c2"],
  handled: ["已处置", "#52c41a"], rework: ["返工", "#eb2f96"],
  suspended: ["挂起", "#8c8c8c"], escalated: ["已上报上级", "#722ed1"],
  closed: ["已结案", "#237804"], rejected: ["不予立案", "#595959"], merged: ["已合并", "#595959"]
};

function gridgovVectors(map, cfg, only) {
  if (cfg.imagery) {  /* the drone orthophoto mosaic (our /tiles/imagery), under our vectors */
    L.tileLayer(cfg.imagery, {maxZoom: 22, maxNativeZoom: cfg.imagery_max_zoom,
                              bounds: cfg.imagery_bounds, className: "gridgov-imagery"}
               ).addTo(map);
  }
  var styles = {
    micro_grids: {weight: 2, color: "#0050b3", opacity: 0.9, fill: false},
    roads: {weight: 3, color: "#8c8c8c", opacity: 1},
    buildings: {weight: 1, color: "#434343", fill: true, fillColor: "#d9d9d9",
                fillOpacity: cfg.imagery ? 0.2 : 0.9}  /* roofs show through on imagery */
  };
  var out = {};
  Object.keys(cfg.tiles).forEach(function (name) {
    if (only && only.indexOf(name) < 0) { return; }
    var st = {};
    st[name] = styles[name];
    out[name] = L.vectorGrid.protobuf(cfg.tiles[name], {
      rendererFactory: L.svg.tile, vectorTileLayerStyles: st, interactive: false,
      maxNativeZoom: 20, maxZoom: 22, className: "gridgov-vt gridgov-vt-" + name
    }).addTo(map);
  });
  return out;
}

function gridgovLocate(map) {
  var me = null;
  map.on("locationfound", function (e) {
    if (me) { map.removeLayer(me); }
    me = L.layerGroup([
      L.circle(e.latlng, {radius: e.accuracy, weight: 1, color: "#1677ff", fillOpacity: 0.1}),
      L.circleMarker(e.latlng, {radius: 9, weight: 3, color: "#fff", fillColor: "#1677ff",
                                fillOpacity: 1, className: "gridgov-me"})
    ]).addTo(map);
  });
  var Locate = L.Control.extend({
    options: {position: "topleft"},
    onAdd: function () {
      var bar = L.DomUtil.create("div", "leaflet-bar");
      var a = L.DomUtil.create("a", "gridgov-locate", bar);
      a.href = "#"; a.title = "我的位置"; a.textContent = "定位";
      a.setAttribute("role", "button");
      L.DomEvent.on(a, "click", function (ev) {
        L.DomEvent.preventDefault(ev);
        map.locate({setView: true, maxZoom: 18, enableHighAccuracy: true});
      });
      return bar;
    }
  });
  new Locate().addTo(map);
  map.locate({setView: false, enableHighAccuracy: true});  /* shown when the phone allows */
}

function gridgovPhone(refs, cfg) {
  var map = refs.map;
  gridgovVectors(map, cfg, cfg.only);
  if (!refs.spot && refs.focus && refs.focus.getBounds) {
    map.fitBounds(refs.focus.getBounds(), {padding: [16, 16], maxZoom: 18});
  }
  gridgovLocate(map);
  var stateEl = document.getElementById("state");
  if (stateEl && GRIDGOV_STATES[stateEl.textContent]) {
    stateEl.textContent = GRIDGOV_STATES[stateEl.textContent][0];
  }
  if (cfg.event) { gridgovActions(cfg); }
}

function gridgovActions(cfg) {
  /* Signed in by the session cookie the server sets (HttpOnly: this script never sees
     it); fetch sends it with same-origin requests, and the server checks their Origin. */
  var api = cfg.root + "/api/v1";
  var $ = function (id) { return document.getElementById(id); };
  var msg = function (text) { $("msg").textContent = text; };
  function answer(r) {
    if (r.status === 204) { return Promise.resolve(null); }
    return r.json().then(function (body) {
      if (!r.ok) {
        var e = new Error(body.detail || body.title || ("HTTP " + r.status));
        e.status = r.status; throw e;
      }
      return body;
    });
  }
  function send(url, init) {
    init.credentials = "same-origin";
    return fetch(url, init).then(answer);
  }
  function signedOut(text) {
    $("login").hidden = false; $("actions").hidden = true;
    if (text) { msg(text); }
  }
  function refresh() {
    return send(api + "/session", {method: "GET"}).then(function (me) {
      return send(api + "/events/" + cfg.event, {method: "GET"}).then(function (ev) {
        $("login").hidden = true; $("actions").hidden = false;
        $("state").textContent = (GRIDGOV_STATES[ev.state] || [ev.state])[0];
        $("accept").hidden = ev.allowed.indexOf("accept") < 0;
        $("handle").hidden = ev.allowed.indexOf("handle") < 0;
        $("who").textContent = me.name + "：" + (ev.allowed.length
          ? "可办理 " + ev.allowed.length + " 项操作" : "当前没有您可办理的操作");
      });
    }).catch(function (e) {
      signedOut(e.status === 401 && !$("login").hidden ? "" : "请重新登录：" + e.message);
    });
  }
  function act(action, extra) {
    var body = {action: action};
    for (var k in extra || {}) { body[k] = extra[k]; }
    return send(api + "/events/" + cfg.event + "/transitions", {
      method: "POST", body: JSON.stringify(body),
      headers: {"Content-Type": "application/json",
                "Idempotency-Key": action + "-" + cfg.event + "-" + Date.now()}
    });
  }
  $("login").addEventListener("submit", function (e) {
    e.preventDefault();
    var f = e.target;
    send(api + "/session", {method: "POST", headers: {"Content-Type": "application/json"},
                            body: JSON.stringify({name: f.name.value, password: f.password.value})})
      .then(function () { f.password.value = ""; msg("已登录"); return refresh(); })
      .catch(function (err) { msg("登录失败：" + err.message); });
  });
  $("logout").addEventListener("click", function () {
    send(api + "/session", {method: "DELETE"})
      .then(function () { signedOut("已退出"); })
      .catch(function (err) { msg("退出失败：" + err.message); });
  });
  $("accept").addEventListener("click", function () {
    act("accept").then(function () { msg("已接单"); refresh(); })
      .catch(function (err) { msg("接单失败：" + err.message); });
  });
  $("photo").addEventListener("change", function () {
    $("handle-go").disabled = !$("photo").files.length;
  });
  $("handle-go").addEventListener("click", function () {
    var file = $("photo").files[0];
    if (!file) { return; }
    var form = new FormData();
    form.append("photo", file); form.append("stage", "after");
    $("handle-go").disabled = true; msg("正在上传…");
    send(api + "/events/" + cfg.event + "/photos", {method: "POST", body: form})
      .then(function (p) { return act("handle", {photo_ids: [p.id]}); })
      .then(function () { msg("已办结，等待核查"); refresh(); })
      .catch(function (err) { msg("办结失败：" + err.message); $("handle-go").disabled = false; });
  });
  refresh();
}

function gridgovScreen(refs, cfg) {
  var map = refs.map;
  document.body.className = "screen";
  gridgovVectors(map, cfg, ["roads"]);
  map.fitBounds(cfg.bounds, {padding: [10, 10]});
  var counts = {};
  function fill(code) {
    var c = counts[code] || [0, 0];
    if (c[1] > 0) { return "#cf1322"; }
    if (c[0] >= 3) { return "#fa8c16"; }
    if (c[0] > 0) { return "#fadb14"; }
    return "#52c41a";
  }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined) { e.textContent = text; }
    if (cls) { e.className = cls; }
    return e;
  }
  function apply(live) {
    counts = live.grids;
    refs.grids.setStyle(function (f) {
      return {color: "#141414", weight: 1, fillColor: fill(f.properties.code), fillOpacity: 0.55};
    });
    refs.events.clearLayers();
    refs.events.addData(live.events);
    refs.events.eachLayer(function (l) {
      var p = l.feature.properties, s = GRIDGOV_STATES[p.state] || [p.state, "#fff"];
      l.setStyle({fillColor: s[1], color: p.overdue ? "#fff" : "#000", weight: p.overdue ? 3 : 1});
      l.bindTooltip("#" + p.id + " " + p.category + " · " + s[0]);
    });
    document.getElementById("open").textContent = live.open;
    document.getElementById("overdue-count").textContent = live.overdue_count;
    var states = document.getElementById("states");
    states.textContent = "";
    Object.keys(GRIDGOV_STATES).forEach(function (k) {
      if (!live.by_state[k]) { return; }
      var li = el("li"), dot = el("i");
      dot.style.background = GRIDGOV_STATES[k][1];
      li.appendChild(dot);
      li.appendChild(document.createTextNode(GRIDGOV_STATES[k][0] + " " + live.by_state[k]));
      states.appendChild(li);
    });
    var tb = document.getElementById("communities");
    tb.textContent = "";
    live.communities.slice(0, 10).forEach(function (c) {
      var tr = el("tr");
      tr.appendChild(el("td", c.name));
      tr.appendChild(el("td", c.open, "n"));
      tr.appendChild(el("td", c.overdue, c.overdue ? "n bad" : "n"));
      tb.appendChild(tr);
    });
    var ol = document.getElementById("overdue");
    ol.textContent = "";
    live.overdue.slice(0, 8).forEach(function (o) {
      var li = el("li");
      li.appendChild(el("span", "#" + o.id + " " + o.category + " · " + (o.grid_name || o.grid) + " "));
      li.appendChild(el("b", "超时 " + o.hours + " 小时"));
      ol.appendChild(li);
    });
    document.getElementById("updated").textContent =
      "更新于 " + new Date(live.at).toLocaleTimeString("zh-CN", {hour12: false});
  }
  apply(cfg.live);
  window.gridgovPolls = 0;
  setInterval(function () {
    fetch(cfg.data, {cache: "no-store"}).then(function (r) { return r.json(); })
      .then(function (live) { window.gridgovPolls += 1; apply(live); })
      .catch(function () { document.getElementById("updated").textContent = "连接中断，稍后重试"; });
  }, cfg.refresh * 1000);
  var cov = null, btn = document.getElementById("coverage");
  btn.addEventListener("click", function () {
    if (cov) { map.removeLayer(cov); cov = null; btn.classList.remove("on"); return; }
    fetch(cfg.coverage).then(function (r) { return r.json(); }).then(function (fc) {
      cov = L.geoJSON(fc, {style: function (f) {
        var v = f.properties.covered;
        return {color: "#003a8c", weight: 1, fillOpacity: 0.75, className: "gridgov-coverage",
                fillColor: v >= 0.8 ? "#0050b3" : v >= 0.5 ? "#69b1ff" : v >= 0.2 ? "#bae0ff" : "#ffffff"};
      }, onEachFeature: function (f, l) {
        l.bindTooltip(f.properties.name + " 覆盖 " + Math.round(f.properties.covered * 100) + "%");
      }}).addTo(map);
      btn.classList.add("on");
    });
  });
  /* change detections of the last comparisons: suspected illegal ones in red */
  var chg = null, cbtn = document.getElementById("changes");
  cbtn.addEventListener("click", function () {
    var out = document.getElementById("changes-count");
    if (chg) {
      map.removeLayer(chg); chg = null; cbtn.classList.remove("on"); out.textContent = "";
      map.fitBounds(cfg.bounds, {padding: [10, 10]});
      return;
    }
    fetch(cfg.changes, {cache: "no-store"}).then(function (r) { return r.json(); }).then(function (fc) {
      var illegal = 0;
      chg = L.geoJSON(fc, {style: function (f) {
        var bad = f.properties.verdict === "illegal_suspected" && f.properties.review !== "dismissed";
        if (bad) { illegal += 1; }
        return bad ? {color: "#ff4d4f", weight: 4, fillColor: "#cf1322", fillOpacity: 0.8,
                      className: "gridgov-change-illegal"}
                   : {color: "#ffd666", weight: 2, fillOpacity: 0.3, className: "gridgov-change"};
      }, onEachFeature: function (f, l) {
        var p = f.properties;
        l.bindTooltip("#" + p.id + " " + ({new_structure: "新增建构筑物",
          removed_structure: "拆除建构筑物", other: "其他变化"}[p.kind] || p.kind) +
          " " + p.area_m2 + "㎡" + (p.verdict === "illegal_suspected" ? " · 疑似违法" : ""));
      }}).addTo(map);
      cbtn.classList.add("on");
      out.textContent = fc.features.length + " 处，疑似违法 " + illegal + " 处";
      if (fc.features.length) { map.fitBounds(chg.getBounds(), {padding: [60, 60], maxZoom: 17}); }
    });
  });
}
