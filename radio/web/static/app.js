/* radio console: small progressive enhancements. Every page works without this file. */
(function () {
  "use strict";
  var $ = function (sel, root) { return (root || document).querySelector(sel); };
  var $$ = function (sel, root) { return Array.prototype.slice.call((root || document).querySelectorAll(sel)); };
  var csrf = ($('meta[name="csrf-token"]') || {}).content || "";

  function detail(response) {
    return response.json().then(function (body) {
      var d = body && body.detail;
      if (Array.isArray(d)) d = d.map(function (e) { return e.msg; }).join("; ");
      return d || ("Lỗi " + response.status);
    }, function () { return "Lỗi " + response.status; });
  }

  /* Confirmations: <form data-confirm> and <button data-confirm>. */
  document.addEventListener("click", function (ev) {
    var button = ev.target.closest && ev.target.closest("button[data-confirm]");
    if (!button) return;
    var form = button.form;
    if (form && !form.checkValidity()) return;  // let the browser say what is missing first
    if (!window.confirm(button.getAttribute("data-confirm"))) ev.preventDefault();
  });
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.hasAttribute("data-confirm") && !window.confirm(form.getAttribute("data-confirm"))) ev.preventDefault();
  });

  /* Live regions: <div id="…" data-refresh="10"> is reloaded from the same URL every 10 s. */
  $$("[data-refresh]").forEach(function (region) {
    var every = Math.max(3, parseInt(region.getAttribute("data-refresh"), 10) || 10) * 1000;
    setInterval(function () {
      if (document.hidden || region.contains(document.activeElement) && document.activeElement !== document.body) return;
      fetch(location.href, { headers: { "X-Refresh": "1" }, credentials: "same-origin" }).then(function (r) {
        if (!r.ok || r.redirected) return null;
        return r.text();
      }).then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById(region.id);
        if (fresh) region.innerHTML = fresh.innerHTML;
      }).catch(function () { /* offline for a moment: try again next time */ });
    }, every);
  });

  /* One broadcast followed live: each cluster's state from GET /api/v1/broadcasts/{id}. */
  var live = $("#broadcast[data-broadcast]");
  if (live && live.getAttribute("data-live") === "true") {
    var labels = JSON.parse(($("#labels") || {}).textContent || "{}");
    var tz = live.getAttribute("data-tz") || undefined;
    var clock = new Intl.DateTimeFormat("vi-VN", { timeZone: tz, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
    var id = live.getAttribute("data-broadcast");
    var timer = null;
    var poll = function () {
      fetch("/api/v1/broadcasts/" + id, { credentials: "same-origin" }).then(function (r) {
        return r.ok ? r.json() : null;
      }).then(function (b) {
        if (!b) return;
        var status = $("#b-status");
        status.textContent = labels.broadcast[b.status] || b.status;
        status.className = "pill b-" + b.status;
        $("#b-reason").textContent = b.reason || "";
        var finished = 0;
        b.deliveries.forEach(function (d) {
          if (d.state === "finished") finished++;
          var row = $('tr[data-delivery="' + d.node_id + "|" + d.command_id + '"]');  // one command may go to many
          if (!row) { location.reload(); return; }
          var pill = $('[data-field="state"]', row);
          pill.textContent = labels.delivery[d.state] || d.state;
          pill.className = "pill d-" + d.state;
          ["received_at", "started_at", "finished_at"].forEach(function (f) {
            $('[data-field="' + f + '"]', row).textContent = d[f] ? clock.format(new Date(d[f])) : "";
          });
          $('[data-field="reason"]', row).textContent = d.reason || "";
        });
        $("#b-finished").textContent = finished;
        $("#b-total").textContent = b.deliveries.length;
        if (b.deliveries.length && !$$("#deliveries tr[data-delivery]").length) location.reload();
        if (b.status !== "preparing" && b.status !== "on_air") {
          clearInterval(timer);
          live.setAttribute("data-live", "false");
        }
      }).catch(function () {});
    };
    timer = setInterval(poll, 1500);
    poll();
  }

  /* "Nghe thử": the exact audio that would air, from POST /api/v1/tts/preview, played in the page. */
  $$("[data-preview]").forEach(function (button) {
    button.addEventListener("click", function (ev) {
      ev.preventDefault();
      var form = button.form;
      var box = button.closest("[data-preview-box]");
      var audio = $("audio", box);
      var status = $("[role=status]", box);
      var value = function (name) { var el = form.elements[name]; return el ? el.value.trim() : ""; };
      var text = value("text");
      if (!text) { status.textContent = "Chưa có nội dung để nghe thử."; return; }
      var body = { text: text };
      if (value("engine")) body.engine = value("engine");
      if (value("voice")) body.voice = value("voice");
      if (value("rate")) body.rate = parseInt(value("rate"), 10);
      button.disabled = true;
      status.textContent = "Đang tạo âm thanh…";
      fetch("/api/v1/tts/preview", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body)
      }).then(function (r) {
        if (!r.ok) return detail(r).then(function (msg) { throw new Error(msg); });
        var seconds = parseFloat(r.headers.get("X-Audio-Duration") || "0");
        var fallback = r.headers.get("X-Audio-Fallback");
        return r.blob().then(function (blob) {
          if (audio.src && audio.src.indexOf("blob:") === 0) URL.revokeObjectURL(audio.src);
          audio.src = URL.createObjectURL(blob);
          audio.hidden = false;
          audio.setAttribute("data-bytes", String(blob.size));
          status.textContent = "Âm thanh sẽ phát, dài " + seconds.toFixed(1).replace(".", ",") + " giây." +
            (fallback ? " (Dùng giọng dự phòng: " + decodeURIComponent(fallback) + ")" : "");
          var playing = audio.play();
          if (playing && playing.catch) playing.catch(function () {});
        });
      }).catch(function (err) {
        status.textContent = "Không nghe thử được: " + err.message;
      }).then(function () { button.disabled = false; });
    });
  });

  /* Voices follow the chosen engine. */
  $$("select[data-engine]").forEach(function (engine) {
    var voice = $("select[data-voice]", engine.form);
    if (!voice) return;
    var sync = function () {
      $$("optgroup", voice).forEach(function (g) {
        g.disabled = !!engine.value && g.getAttribute("data-for") !== engine.value;
      });
      var chosen = voice.options[voice.selectedIndex];
      if (chosen && chosen.parentNode.disabled) voice.value = "";
    };
    engine.addEventListener("change", sync);
    sync();
  });

  /* Slot form: show the fields of the chosen repetition; check the slot while the officer types. */
  var slotForm = $("#slot-form");
  if (slotForm) {
    var repeat = $("[data-repeat]", slotForm);
    var showRepeat = function () {
      $$("[data-show]", slotForm).forEach(function (el) {
        el.hidden = el.getAttribute("data-show").split(" ").indexOf(repeat.value) < 0;
      });
    };
    repeat.addEventListener("change", showRepeat);
    showRepeat();
    var pending = null;
    var checkNow = function () {
      var out = $("#slot-check");
      if (!slotForm.elements.name.value.trim() || !slotForm.elements.time.value) return;
      fetch(slotForm.getAttribute("data-check"), {
        method: "POST", credentials: "same-origin", body: new FormData(slotForm),
        headers: { "X-Fragment": "1", "X-CSRF-Token": csrf }
      }).then(function (r) { return r.text(); }).then(function (html) { out.innerHTML = html; })
        .catch(function () { out.innerHTML = ""; });
    };
    var later = function () { clearTimeout(pending); pending = setTimeout(checkNow, 600); };
    slotForm.addEventListener("change", later);
    slotForm.addEventListener("input", later);
    var button = $("[data-check-now]", slotForm);
    if (button) button.addEventListener("click", function (ev) { ev.preventDefault(); checkNow(); });
  }

  /* Targets: the zone boxes matter only when "Chọn tổ dân phố" is picked. */
  $$("[data-where-list]").forEach(function (list) {
    var form = list.closest("form");
    var sync = function () {
      var some = $('input[data-where][value="some"]', form);
      list.classList.toggle("muted", !(some && some.checked));
    };
    $$("input[data-where]", form).forEach(function (r) { r.addEventListener("change", sync); });
    $$("input", list).forEach(function (box) {
      box.addEventListener("change", function () {
        var some = $('input[data-where][value="some"]', form);
        if (box.checked && some) { some.checked = true; sync(); }
      });
    });
    sync();
  });

  /* Emergency: picking a bulletin fills the text (the officer can still edit it). */
  $$("select[data-fill-from]").forEach(function (select) {
    var texts = JSON.parse(document.getElementById(select.getAttribute("data-fill-from")).textContent || "{}");
    var form = select.form;
    select.addEventListener("change", function () {
      var b = texts[select.value];
      if (!b) return;
      form.elements.text.value = b.text;
      form.elements.title.value = b.title;
    });
  });

  /* Record with the microphone, listen back, save to POST /api/v1/assets, then air or schedule it. */
  var rec = $("[data-recorder]");
  if (rec) {
    var panel = $(".js-only", rec);
    var say = function (text) { $("#rec-status").textContent = text; };
    panel.hidden = false;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.MediaRecorder) {
      $$("button", panel).forEach(function (b) { b.disabled = true; });
      say("Trình duyệt này không cho thu âm ở đây (cần mở trang qua HTTPS, hoặc trên chính máy chủ). Hãy tải tệp âm thanh lên ở mục dưới.");
    } else {
      var start = $("#rec-start"), stop = $("#rec-stop"), save = $("#rec-save"), again = $("#rec-again");
      var audio = $("#rec-audio"), time = $("#rec-time"), level = $("#rec-level span");
      var recorder = null, chunks = [], blob = null, began = 0, tick = null, stream = null, ctx = null;
      var LIMIT_S = 300;
      var type = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/webm", "audio/mp4"].filter(function (t) {
        return MediaRecorder.isTypeSupported(t);
      })[0] || "";
      var show = function () {
        var s = Math.floor((Date.now() - began) / 1000);
        time.textContent = Math.floor(s / 60) + ":" + ("0" + (s % 60)).slice(-2);
        if (s >= LIMIT_S) stop.click();
      };
      var meter = function (source) {
        try {
          ctx = new (window.AudioContext || window.webkitAudioContext)();
          var analyser = ctx.createAnalyser();
          analyser.fftSize = 512;
          ctx.createMediaStreamSource(source).connect(analyser);
          var data = new Uint8Array(analyser.fftSize);
          var draw = function () {
            if (!recorder || recorder.state !== "recording") { level.style.width = "0"; return; }
            analyser.getByteTimeDomainData(data);
            var peak = 0;
            for (var i = 0; i < data.length; i++) peak = Math.max(peak, Math.abs(data[i] - 128));
            level.style.width = Math.min(100, peak / 1.28) + "%";
            requestAnimationFrame(draw);
          };
          draw();
        } catch (e) { /* the level meter is only a help */ }
      };
      start.addEventListener("click", function () {
        navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } }).then(function (s) {
          stream = s;
          chunks = [];
          recorder = type ? new MediaRecorder(stream, { mimeType: type }) : new MediaRecorder(stream);
          recorder.ondataavailable = function (e) { if (e.data && e.data.size) chunks.push(e.data); };
          recorder.onstop = function () {
            clearInterval(tick);
            stream.getTracks().forEach(function (t) { t.stop(); });
            if (ctx) ctx.close();
            rec.classList.remove("recording");
            blob = new Blob(chunks, { type: recorder.mimeType || type || "audio/webm" });
            audio.src = URL.createObjectURL(blob);
            audio.hidden = false;
            save.disabled = blob.size === 0;
            again.hidden = false;
            start.disabled = false;
            say("Nghe lại bản thu. Nếu được, bấm “Lưu bản thu”; nếu chưa, bấm “Thu lại”.");
          };
          recorder.start(1000);
          began = Date.now();
          tick = setInterval(show, 250);
          show();
          meter(stream);
          rec.classList.add("recording");
          start.disabled = true;
          stop.disabled = false;
          save.disabled = true;
          audio.hidden = true;
          say("Đang thu… bấm “Dừng” khi nói xong (tối đa 5 phút).");
        }).catch(function (err) {
          say("Không mở được micrô: " + (err && err.message ? err.message : err) + ". Hãy cho phép trình duyệt dùng micrô.");
        });
      });
      stop.addEventListener("click", function () {
        stop.disabled = true;
        if (recorder && recorder.state !== "inactive") recorder.stop();
      });
      again.addEventListener("click", function () {
        audio.hidden = true; again.hidden = true; save.disabled = true; blob = null;
        time.textContent = "0:00";
        say("Bấm “Bắt đầu thu” để thu lại.");
      });
      save.addEventListener("click", function () {
        if (!blob) return;
        var now = new Date();
        var pad = function (n) { return ("0" + n).slice(-2); };
        var id = "thu-am-" + now.getFullYear() + pad(now.getMonth() + 1) + pad(now.getDate()) + "-" +
          pad(now.getHours()) + pad(now.getMinutes()) + pad(now.getSeconds()) + "-" + Math.random().toString(36).slice(2, 6);
        var name = $("#rec-name").value.trim() || "Bản thu";
        var data = new FormData();
        data.append("id", id);
        data.append("name", name);
        data.append("file", blob, "ban-thu." + (blob.type.indexOf("ogg") >= 0 ? "ogg" : blob.type.indexOf("mp4") >= 0 ? "m4a" : "webm"));
        save.disabled = true;
        say("Đang lưu và chuẩn hóa âm lượng…");
        fetch("/api/v1/assets", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf }, body: data })
          .then(function (r) {
            if (!r.ok) return detail(r).then(function (msg) { throw new Error(msg); });
            return r.json();
          }).then(function (asset) {
            location.href = "/thu-am?ban_thu=" + encodeURIComponent(asset.id) + "#ban-thu";
          }).catch(function (err) {
            save.disabled = false;
            say("Chưa lưu được: " + err.message);
          });
      });
    }
  }
}());
