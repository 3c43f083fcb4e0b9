/* Preview page of a published run (pcpipe, pipeline/publish/preview.py). Reads window.PREVIEW_DATA (data.js):
   products (WGS 84 footprints, metadata, relative download links), overlays (GeoJSON in WGS 84), the slope
   image and the 3D tilesets. Makes no request outside the run folder unless ?basemap=URL asks for a base map.
   window.previewState says what was drawn and loaded (read by tests/test_preview.py). */
(function () {
  "use strict";
  var D = window.PREVIEW_DATA;
  var state = window.previewState = {
    ready: false, errors: [], sheetsDrawn: 0, sheetCellsDrawn: 0, layersDrawn: 0, overlays: {}, slope: null,
    tilesets: {}, cesium: "pending", activeTileset: null
  };
  var api = window.preview = {};
  if (!D) { document.body.insertAdjacentHTML("beforeend", "<p>data.js missing</p>"); return; }
  var params = new URLSearchParams(window.location.search);

  // ---------------------------------------------------------------------------------------------- helpers
  function esc(s) {
    return String(s === null || s === undefined ? "" : s).replace(/[&<>"']/g, function (c) {
      return {"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;"}[c];
    });
  }
  function num(v, digits) {
    if (typeof v !== "number") return esc(v);
    var d = digits === undefined ? (Number.isInteger(v) ? 0 : 2) : digits;
    return v.toLocaleString("en-US", {maximumFractionDigits: d});
  }
  function bytes(n) {
    if (!n) return "";
    var u = ["B", "KB", "MB", "GB", "TB"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return n.toFixed(i ? 1 : 0) + " " + u[i];
  }
  function figure(v, depth) {  // a key figure of any shape, compactly
    depth = depth || 0;
    if (v === null || v === undefined) return "–";
    if (typeof v === "number") return num(v);
    if (typeof v !== "object") return esc(v);
    if (Array.isArray(v)) {
      if (v.every(function (x) { return typeof x !== "object" || x === null; })) {
        var s = v.slice(0, 12).map(function (x) { return figure(x, depth + 1); }).join(", ");
        return s + (v.length > 12 ? ", … (" + v.length + ")" : "");
      }
      if (depth > 1) return "[" + v.length + "]";
      return v.slice(0, 6).map(function (x) { return figure(x, depth + 1); }).join("<br>") +
        (v.length > 6 ? "<br>… (" + v.length + ")" : "");
    }
    if (depth > 1) return "{…}";
    return Object.keys(v).map(function (k) { return esc(k) + ": " + figure(v[k], depth + 1); }).join("; ");
  }
  function day(iso) { return iso ? iso.slice(0, 10) : ""; }
  function rows(pairs) {
    return "<table>" + pairs.filter(function (p) { return p[1] !== null && p[1] !== undefined && p[1] !== ""; })
      .map(function (p) { return "<tr><th>" + esc(p[0]) + "</th><td>" + p[1] + "</td></tr>"; }).join("") +
      "</table>";
  }
  function links(assets) {
    if (!assets || !assets.length) return "";
    return "<ul>" + assets.map(function (a) {
      return "<li><a href=\"" + esc(a.href) + "\" download>" + esc(a.title || a.key) + "</a> <span class=\"small\">" +
        esc(a.type.split(";")[0]) + (a.size ? ", " + bytes(a.size) : "") + "</span></li>";
    }).join("") + "</ul>";
  }
  function dates(p) {
    if (!p.start) return "unknown";
    var s = day(p.start), e = day(p.end);
    return esc(s === e ? s : s + " – " + e) + " <span class=\"small\">(" + esc(p.dates_from) + ")</span>";
  }
  function productPopup(p, item) {
    var pairs = [];
    if (item && item.sheet) pairs.push(["図郭 / sheet", "<b>" + esc(item.sheet) + "</b> (1/500)"]);
    if (item && item.properties) {
      pairs.push(["点数 / points", num(item.properties["pc:count"])]);
      pairs.push(["密度 / density", item.properties["pc:density"] ?
        num(item.properties["pc:density"], 1) + " pts/m²" : null]);
    }
    pairs.push(["成果全体 / product", p.points ? num(p.points) + " points, " + p.sheets.length + " sheet(s)" +
      (p.density ? ", " + num(p.density, 1) + " pts/m²" : "") : p.sheets.length + " sheet(s)"]);
    pairs.push(["日付 / dates", dates(p)]);
    pairs.push(["座標系 / CRS", "EPSG:" + esc(p.crs.epsg) + (p.crs.vertical ? " + " + esc(p.crs.vertical) : "")]);
    Object.keys(p.summary || {}).forEach(function (k) { pairs.push([k, figure(p.summary[k])]); });
    var dl = links((item ? item.assets : []).concat(p.assets));
    return "<div class=\"popup\"><h3>" + esc(p.title.ja) + "</h3><p class=\"en\">" + esc(p.title.en) + "</p>" +
      rows(pairs) + (dl ? "<b>ダウンロード / downloads</b>" + dl : "") +
      "<p class=\"small\">" + esc(p.license.id) + ", " + esc(p.license.attribution) + "</p></div>";
  }
  function propsPopup(title, props) {
    var pairs = Object.keys(props || {}).filter(function (k) { return k !== "colour"; })
      .map(function (k) { return [k, figure(props[k])]; });
    return "<div class=\"popup\"><h3>" + esc(title.ja) + "</h3><p class=\"en\">" + esc(title.en) + "</p>" +
      rows(pairs) + "</div>";
  }
  function area(b) { return (b[2] - b[0]) * (b[3] - b[1]); }
  function latlngBounds(b) { return L.latLngBounds([b[1], b[0]], [b[3], b[2]]); }

  // ---------------------------------------------------------------------------------------------- 2D map
  function initMap() {
    var map = L.map("map", {zoomSnap: 0.25, maxZoom: 22, attributionControl: true});
    api.map = map;
    map.attributionControl.setPrefix("Leaflet");
    map.attributionControl.addAttribution(esc(D.license ? D.license.attribution + " (" + D.license.id + ")" : ""));
    [["slope", 390], ["extents", 405], ["cells", 410], ["sheets", 420], ["overlays", 430]].forEach(function (p) {
      map.createPane(p[0]).style.zIndex = p[1];
    });
    var base = {}, over = {};
    var basemap = params.get("basemap");  // optional, never required: e.g. ?basemap=https://host/{z}/{x}/{y}.png
    if (basemap) {
      base["base map"] = L.tileLayer(basemap, {maxZoom: 22, maxNativeZoom: Number(params.get("maxzoom") || 18),
        attribution: esc(params.get("attribution") || "")}).addTo(map);
      base["none"] = L.layerGroup();
    }
    if (D.slope) {
      var img = L.imageOverlay(D.slope.image, [D.slope.bounds[0], D.slope.bounds[1]],
        {pane: "slope", opacity: 0.8, interactive: false});
      img.on("load", function () { state.slope = "loaded"; });
      img.on("error", function () { state.slope = "error"; state.errors.push("slope image failed"); });
      img.addTo(map);
      over["<span class=\"sw\" style=\"background:linear-gradient(90deg,#1a9850,#fee08b,#f46d43,#a50026)\"></span>" +
        esc(D.slope.title.ja + " / " + D.slope.title.en)] = img;
    }
    // Layer products: their extents, dashed, under the sheets.
    var extents = L.layerGroup(), cells = L.layerGroup(), sheets = L.layerGroup(), labels = L.layerGroup();
    var dots = L.layerGroup();
    D.products.filter(function (p) { return p.kind !== "pointcloud"; }).forEach(function (p) {
      p.items.forEach(function (it) {
        L.geoJSON(it.geometry, {pane: "extents", style: {color: p.colour, weight: 2, dashArray: "6 4",
          fillColor: p.colour, fillOpacity: 0.04}})
          .bindPopup(productPopup(p, null), {maxWidth: 420}).addTo(extents);
        state.layersDrawn++;
      });
    });
    // Sheet cells (1/500, 300 m x 400 m), once per code, then each product's sheets: its data footprint.
    var seen = {}, items = [];
    D.products.filter(function (p) { return p.kind === "pointcloud"; }).forEach(function (p) {
      p.items.forEach(function (it) { items.push([p, it]); });
    });
    items.forEach(function (pi) {
      var it = pi[1];
      if (!it.sheet_geometry || seen[it.sheet]) return;
      seen[it.sheet] = true;
      L.geoJSON(it.sheet_geometry, {pane: "cells", interactive: false,
        style: {color: "#333", weight: 1, dashArray: "2 3", fill: false, className: "sheet-cell"}}).addTo(cells);
      var c = it.sheet_geometry.coordinates[0];
      var lat = Math.max.apply(null, c.map(function (q) { return q[1]; }));
      var lon = Math.min.apply(null, c.map(function (q) { return q[0]; }));
      L.tooltip({permanent: true, direction: "right", className: "sheet-label", offset: [0, 8], pane: "cells"})
        .setLatLng([lat, lon]).setContent(esc(it.sheet)).addTo(labels);
      state.sheetCellsDrawn++;
    });
    items.sort(function (a, b) { return area(b[1].bbox) - area(a[1].bbox); });  // small ones on top, clickable
    items.forEach(function (pi) {
      var p = pi[0], it = pi[1];
      var layer = L.geoJSON(it.geometry, {pane: "sheets", style: {color: p.colour, weight: 2, fillColor: p.colour,
        fillOpacity: 0.18, className: "sheet-footprint"}});
      layer.eachLayer(function (l) {
        l.on("add", function () {
          if (l._path) { l._path.setAttribute("data-product", p.id); l._path.setAttribute("data-sheet", it.sheet); }
        });
      });
      layer.bindPopup(productPopup(p, it), {maxWidth: 420}).addTo(sheets);
      state.sheetsDrawn++;
      // A dot per sheet for the small scales, where a 300 m sheet is a pixel or two.
      var bb = it.bbox;
      L.circleMarker([(bb[1] + bb[3]) / 2, (bb[0] + bb[2]) / 2], {pane: "sheets", radius: 6, color: "#fff",
        weight: 1.5, fillColor: p.colour, fillOpacity: 0.9}).bindPopup(productPopup(p, it), {maxWidth: 420})
        .addTo(dots);
    });
    extents.addTo(map); cells.addTo(map); sheets.addTo(map);
    over["図郭 (1/500) / sheets"] = cells;
    over["点群の範囲 / point-cloud footprints"] = sheets;
    over["レイヤの範囲 / layer extents"] = extents;
    function syncLabels() {
      var show = map.getZoom() >= 14 && map.hasLayer(cells);
      if (show && !map.hasLayer(labels)) labels.addTo(map);
      if (!show && map.hasLayer(labels)) map.removeLayer(labels);
      var small = map.getZoom() < 14 && map.hasLayer(sheets);
      if (small && !map.hasLayer(dots)) dots.addTo(map);
      if (!small && map.hasLayer(dots)) map.removeLayer(dots);
    }
    map.on("zoomend overlayadd overlayremove", syncLabels);
    // Overlays.
    D.overlays.forEach(function (o) {
      var st = o.style, n = 0;
      var layer = L.geoJSON(o.data, {
        pane: "overlays",
        style: function (f) {
          var s = {color: st.color, weight: st.weight, opacity: st.opacity === undefined ? 1 : st.opacity,
            fillColor: st.fillColor || st.color, fillOpacity: st.fillOpacity === undefined ? 0.4 : st.fillOpacity,
            className: "overlay-" + o.key};
          if (st.byProperty && st.colours && st.colours[f.properties[st.byProperty]]) {
            s.color = s.fillColor = st.colours[f.properties[st.byProperty]];
          }
          return s;
        },
        pointToLayer: function (f, latlng) {
          return L.circleMarker(latlng, {radius: 5, pane: "overlays"});
        },
        onEachFeature: function (f, l) { n++; l.bindPopup(propsPopup(o.title, f.properties), {maxWidth: 380}); }
      });
      state.overlays[o.key] = n;
      layer.addTo(map);
      var first = o.data.features[0], line = !!(first && /Line/.test(first.geometry.type));
      var sw = line ? "<span class=\"ln\" style=\"border-color:" + esc(st.color) + "\"></span>" :
        "<span class=\"sw\" style=\"background:" + esc(st.fillColor || st.color) + "\"></span>";
      over[sw + esc(o.title.ja + " / " + o.title.en) + " (" + n + ")"] = layer;
    });
    // collapsed: one button at the corner, opened on hover, so that it does not cover the data
    L.control.layers(basemap ? base : null, over, {collapsed: true, position: "topright"}).addTo(map);
    L.control.scale({imperial: false}).addTo(map);
    legend();
    var g = groups();
    map.fitBounds(g[0].bounds.pad(0.1));
    state.view = {groups: g.map(function (x) { return x.products; }), framed: g[0].products};
    syncLabels();
    api.zoomTo = function (id) {
      var p = D.products.filter(function (q) { return q.id === id; })[0];
      if (!p) return false;
      map.fitBounds(latlngBounds(p.bbox).pad(0.15));
      return true;
    };
  }

  function legend() {  // in the side panel, not over the map
    var div = document.getElementById("legend");
    if (!div) return;
    var h = "<h4>凡例 / legend</h4>";
    D.products.forEach(function (p) {
      var dashed = p.kind !== "pointcloud";
      h += "<div><span class=\"sw\" style=\"background:" + esc(p.colour) + (dashed ? ";opacity:0.4" : "") +
        "\"></span>" + esc(p.kind_title.ja) + " (" + esc(p.source) + ")</div>";
    });
    if (D.slope) {
      var stops = D.slope.stops, max = stops[stops.length - 1][0];
      var grad = stops.map(function (s) {
        return "rgb(" + s[1].join(",") + ") " + (100 * s[0] / max).toFixed(0) + "%";
      }).join(",");
      h += "<h4>" + esc(D.slope.title.ja + " / " + D.slope.title.en) + "</h4><div class=\"ramp\" " +
        "style=\"background:linear-gradient(90deg," + grad + ")\"></div><div class=\"ticks\">" +
        stops.map(function (s) { return "<span>" + s[0] + "°</span>"; }).join("") + "</div>";
    }
    div.innerHTML = h;
  }

  // The first view: the sheets of the group of products that lie together (footprints within GAP_M of each other)
  // holding the most products, so that its 1/500 sheets are drawn at a readable scale; a survey spread over the prefecture would
  // otherwise open as a few dots. The other groups are one click away in the side panel.
  var GAP_M = 10000;
  function groups() {
    var boxes = D.products.map(function (p) { return latlngBounds(p.bbox); }), n = boxes.length;
    var id = boxes.map(function (_, i) { return i; });
    function root(i) { while (id[i] !== i) i = id[i] = id[id[i]]; return i; }
    function gap(a, b) {  // metres between two boxes (0 when they overlap)
      var dLat = Math.max(0, a.getSouth() - b.getNorth(), b.getSouth() - a.getNorth());
      var lat = (a.getCenter().lat + b.getCenter().lat) / 2;
      var dLon = Math.max(0, a.getWest() - b.getEast(), b.getWest() - a.getEast());
      return Math.hypot(dLat * 111320, dLon * 111320 * Math.cos(lat * Math.PI / 180));
    }
    for (var i = 0; i < n; i++) for (var j = i + 1; j < n; j++) if (gap(boxes[i], boxes[j]) < GAP_M) id[root(i)] = root(j);
    var out = {};
    boxes.forEach(function (b, i) {
      var r = root(i);
      if (!out[r]) out[r] = {bounds: L.latLngBounds(b.getSouthWest(), b.getNorthEast()), products: [], sheets: 0};
      out[r].bounds.extend(b);
      D.products[i].items.forEach(function (it) {  // whole sheet cells in view, not just the data in them
        if (it.sheet_geometry) it.sheet_geometry.coordinates[0].forEach(function (q) {
          out[r].bounds.extend([q[1], q[0]]);
        });
      });
      out[r].products.push(D.products[i].id);
      out[r].sheets += D.products[i].sheets.length;
    });
    return Object.keys(out).map(function (k) { return out[k]; }).sort(function (a, b) {
      return b.products.length - a.products.length || b.sheets - a.sheets;
    });
  }

  // ---------------------------------------------------------------------------------------------- side panel
  function initSide() {
    var ul = document.getElementById("products");
    D.products.forEach(function (p) {
      var li = document.createElement("li");
      li.setAttribute("data-product", p.id);
      var meta = p.kind === "pointcloud" ? num(p.points) + " points, " + p.sheets.length + " sheet(s)" :
        p.sheets.length + " sheet(s)";
      li.innerHTML = "<span class=\"sw\" style=\"background:" + esc(p.colour) + "\"></span>" + esc(p.title.ja) +
        "<div class=\"en\">" + esc(p.title.en) + "</div><div class=\"meta\">" + meta + (p.start ? ", " +
        esc(day(p.start)) : "") + "</div>";
      li.addEventListener("click", function () {
        if (api.zoomTo) api.zoomTo(p.id);
        if (api.show3d && state.tilesets[p.source]) api.show3d(p.source);
      });
      ul.appendChild(li);
    });
    var nav = document.getElementById("links");
    var l = D.links || {};
    if (l.catalog) nav.insertAdjacentHTML("beforeend", "<a href=\"" + esc(l.catalog) + "\">STAC catalog</a>");
    if (l.publish_summary) {
      nav.insertAdjacentHTML("beforeend", "<a href=\"" + esc(l.publish_summary) + "\">publish summary</a>");
    }
    if (D.license) {
      document.getElementById("licence").textContent = "ライセンス / licence: " + D.license.id + ", " +
        D.license.attribution;
    }
  }

  // ---------------------------------------------------------------------------------------------- 3D view
  // Points without colours: a blue-green-orange-red ramp over the source's height range, around the tileset's centre
  // (heights along the local vertical; positionWC is single precision, about 0.5 m: fine for a preview).
  function heightShader(center, half) {
    return new Cesium.CustomShader({
      lightingModel: Cesium.LightingModel.UNLIT,
      uniforms: {
        u_center: {type: Cesium.UniformType.VEC3, value: center},
        u_half: {type: Cesium.UniformType.FLOAT, value: Math.max(half, 0.5)}
      },
      fragmentShaderText: [
        "void fragmentMain(FragmentInput fsInput, inout czm_modelMaterial material) {",
        "  float h = dot(fsInput.attributes.positionWC - u_center, normalize(u_center));",
        "  float t = clamp(0.5 + 0.5 * h / u_half, 0.0, 1.0);",
        "  vec3 c0 = vec3(0.17, 0.48, 0.71), c1 = vec3(0.1, 0.59, 0.25), c2 = vec3(0.99, 0.68, 0.38);",
        "  vec3 c3 = vec3(0.84, 0.1, 0.11);",
        "  material.diffuse = t < 0.333 ? mix(c0, c1, t * 3.0) : t < 0.667 ? mix(c1, c2, t * 3.0 - 1.0) :",
        "    mix(c2, c3, t * 3.0 - 2.0);",
        "}"].join("\n")
    });
  }

  function init3d() {
    var el = document.getElementById("globe"), status = document.getElementById("globe-status");
    var select = document.getElementById("tileset-select");
    function msg(t) { el.innerHTML = "<p class=\"msg\">" + esc(t) + "</p>"; status.textContent = ""; }
    if (!D.tilesets.length) {
      state.cesium = "none";
      msg("この成果には 3D Tiles がありません / this run has no 3D Tiles (pcpipe publish writes them).");
      return;
    }
    if (window.location.protocol === "file:") {
      state.cesium = "file";
      msg("3D 表示には http(s) が必要です / the 3D view needs http(s): serve the run folder, e.g. " +
        "python3 -m http.server, and open preview/ there.");
      return;
    }
    if (typeof Cesium === "undefined") { state.cesium = "missing"; msg("CesiumJS not loaded"); return; }
    // No Ion, no imagery, no terrain service, no geocoder: the view touches nothing outside the run folder.
    Cesium.Ion.defaultAccessToken = "";
    var viewer = new Cesium.Viewer(el, {
      baseLayer: false, baseLayerPicker: false, geocoder: false, homeButton: false, sceneModePicker: false,
      navigationHelpButton: false, animation: false, timeline: false, fullscreenButton: false, infoBox: false,
      selectionIndicator: false, skyBox: false, skyAtmosphere: false, vrButton: false,
      terrainProvider: new Cesium.EllipsoidTerrainProvider(),
      // Render on change only (tiles arriving, camera moving): an idle page costs no CPU.
      requestRenderMode: true, maximumRenderTimeChange: Infinity,
      contextOptions: {webgl: {preserveDrawingBuffer: true}}
    });
    api.viewer = viewer;
    viewer.scene.globe.baseColor = Cesium.Color.fromCssColorString("#34495e");
    viewer.scene.globe.showGroundAtmosphere = false;
    viewer.scene.backgroundColor = Cesium.Color.fromCssColorString("#111820");
    var sets = {};
    D.tilesets.forEach(function (t) {
      var s = state.tilesets[t.source] = {url: t.url, ready: false, initialTilesLoaded: false, allTilesLoaded: false,
        tilesLoaded: 0, tilesWithPoints: 0, pointsLoaded: 0, failed: 0, error: null};
      var opt = document.createElement("option");
      opt.value = t.source;
      opt.textContent = t.title.ja + " / " + t.source;
      select.appendChild(opt);
      sets[t.source] = Cesium.Cesium3DTileset.fromUrl(t.url, {maximumScreenSpaceError: 8})
        .then(function (ts) {
          ts.pointCloudShading.attenuation = true;
          ts.pointCloudShading.maximumAttenuation = 4;
          if (!t.rgb && t.z_half) ts.customShader = heightShader(ts.boundingSphere.center, t.z_half);
          ts.tileLoad.addEventListener(function (tile) {
            s.tilesLoaded++;
            var n = tile.content && tile.content.pointsLength;
            if (n) { s.tilesWithPoints++; s.pointsLoaded += n; }
          });
          ts.tileFailed.addEventListener(function (e) {
            s.failed++; s.error = String(e.message || e); state.errors.push(t.source + ": " + s.error);
          });
          ts.initialTilesLoaded.addEventListener(function () { s.initialTilesLoaded = true; report(); });
          ts.allTilesLoaded.addEventListener(function () { s.allTilesLoaded = true; report(); });
          viewer.scene.primitives.add(ts);
          s.ready = true;
          return ts;
        })
        .catch(function (e) {
          s.error = String(e && e.message || e);
          state.errors.push(t.source + ": " + s.error);
          status.textContent = "tileset error: " + s.error;
          throw e;
        });
    });
    function report() {
      var s = state.tilesets[state.activeTileset];
      if (!s) return;
      status.textContent = s.tilesWithPoints ? s.tilesWithPoints + " tiles, " + num(s.pointsLoaded) + " points loaded"
        : s.tilesLoaded + " tile(s) loaded" + (s.tilesLoaded ? " (mesh)" : "");
    }
    api.show3d = function (source) {
      if (!sets[source]) return Promise.resolve(false);
      state.activeTileset = source;
      select.value = source;
      status.textContent = "loading " + source + " …";
      return sets[source].then(function (ts) {
        var r = ts.boundingSphere.radius;
        return viewer.zoomTo(ts, new Cesium.HeadingPitchRange(0, -0.7, Math.max(30, r * 2.2)));
      }).then(function () { report(); return true; });
    };
    select.addEventListener("change", function () { api.show3d(select.value); });
    var first = D.tilesets.filter(function (t) { return t.source === params.get("tileset"); })[0] || D.tilesets[0];
    state.cesium = "running";
    api.show3d(first.source).catch(function () {});
  }

  window.addEventListener("error", function (e) { state.errors.push(String(e.message)); });
  initSide();
  initMap();
  try { init3d(); } catch (e) {
    state.cesium = "error"; state.errors.push("3D: " + (e && e.message || e));
    document.getElementById("globe").innerHTML = "<p class=\"msg\">3D view failed: " + esc(e && e.message) + "</p>";
    throw e;
  }
  state.ready = true;
})();
