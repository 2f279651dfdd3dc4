// The web client for the desks.  Plain script, no build step, nothing from elsewhere:
// it talks to the router's HTTP API with the session cookie (HttpOnly: this script
// never sees it) and sends the header that proves a request comes from this page.
"use strict";
(() => {
  const STRINGS = window.CALLROUTER_STRINGS;
  const HEADER = { "X-Callrouter-Client": "web" };
  const $ = (id) => document.getElementById(id);

  // --- language -------------------------------------------------------------------
  const lang =
    (navigator.languages || [navigator.language || "en"])
      .map((tag) => String(tag).toLowerCase().split("-")[0])
      .find((tag) => tag in STRINGS) || "en";
  const words = STRINGS[lang];
  const t = (key, values = {}) =>
    (words[key] ?? STRINGS.en[key] ?? key).replace(/\{(\w+)\}/g, (_, name) =>
      String(values[name] ?? ""),
    );
  document.documentElement.lang = lang;
  for (const element of document.querySelectorAll("[data-text]")) {
    element.textContent = t(element.dataset.text);
  }
  for (const element of document.querySelectorAll("[data-label]")) {
    element.setAttribute("aria-label", t(element.dataset.label));
  }
  document.title = t("title");

  const duration = (seconds) =>
    seconds >= 60
      ? t("minutes", { n: Math.ceil(seconds / 60) })
      : t("seconds", { n: Math.max(1, Math.ceil(seconds)) });

  // --- the API ----------------------------------------------------------------------
  async function api(method, path, body) {
    const options = { method, headers: { ...HEADER }, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let reply;
    try {
      reply = await fetch(path, options);
    } catch {
      return { status: 0, data: null, headers: new Headers() };
    }
    let data = null;
    if ((reply.headers.get("Content-Type") || "").includes("json")) {
      data = await reply.json().catch(() => null);
    }
    return { status: reply.status, data, headers: reply.headers };
  }

  // --- state ------------------------------------------------------------------------
  let desk = null; // DeskView of /api/v1/me/desk
  // Desk events received so far: an answer to refresh() is shown only when none came
  // while it was on its way, since it may be older than the event (the stream sends
  // every change, so the stream wins).
  let deskEvents = 0;
  let status = sessionStorage.getItem("callrouter-status") || "online";
  const clientId = (() => {
    let id = sessionStorage.getItem("callrouter-client");
    if (!id) {
      const bytes = crypto.getRandomValues(new Uint8Array(6));
      id = "web-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
      sessionStorage.setItem("callrouter-client", id);
    }
    return id;
  })();
  const people = new Map(); // extension -> PresenceView
  let seats = {}; // extension -> name of the workplace they sit at
  let streams = [];
  let heartbeat = null;
  let planTimer = null;

  function notice(text) {
    $("notice").textContent = text || "";
  }

  // --- signing in and out -----------------------------------------------------------
  function showSignIn(message) {
    stop();
    desk = null;
    $("desk-view").hidden = true;
    $("sign-out").hidden = true;
    $("who").textContent = "";
    $("plan").replaceChildren();
    planKey = null;
    $("sign-in-view").hidden = false;
    $("sign-in-error").textContent = message || "";
    $("pin").value = "";
    $("extension").focus();
  }

  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const extension = $("extension").value.trim();
    const pin = $("pin").value;
    const error = $("sign-in-error");
    error.textContent = "";
    if (!/^[0-9]{1,20}$/.test(extension) || pin === "") {
      error.textContent = t("badInput");
      return;
    }
    const reply = await api("POST", "/api/v1/web/session", { extension, pin });
    $("pin").value = "";
    if (reply.status === 200) {
      await enter();
    } else if (reply.status === 401) {
      error.textContent = t("badCredentials");
    } else if (reply.status === 429) {
      const wait = Number(reply.headers.get("Retry-After")) || 60;
      error.textContent = t("locked", { time: duration(wait) });
    } else if (reply.status === 422) {
      error.textContent = t("badInput");
    } else {
      error.textContent = t("failed", { status: reply.status || "-" });
    }
    $("pin").focus();
  });

  $("sign-out").addEventListener("click", async () => {
    // Offline at once for this page, then the session ends on the server.
    await api("PUT", "/api/v1/presence/client", { client_id: clientId, status: "offline" });
    await api("DELETE", "/api/v1/web/session");
    sessionStorage.removeItem("callrouter-status");
    status = "online";
    showSignIn("");
  });

  function stop() {
    for (const source of streams) source.close();
    streams = [];
    clearTimeout(heartbeat);
    heartbeat = null;
    clearInterval(planTimer);
    planTimer = null;
  }

  async function enter() {
    const reply = await api("GET", "/api/v1/me/desk");
    if (reply.status !== 200) {
      showSignIn(reply.status === 401 || reply.status === 400 ? "" : t("failed", { status: reply.status }));
      return;
    }
    $("sign-in-view").hidden = true;
    $("desk-view").hidden = false;
    $("sign-out").hidden = false;
    notice("");
    renderDesk(reply.data);
    loadPersonal(); // and renderDesk asked for the plan
    // Schedules (when:) change the plan as the day goes on.
    clearInterval(planTimer);
    planTimer = setInterval(loadPlan, 60_000);
    for (const radio of document.querySelectorAll("input[name=status]")) {
      radio.checked = radio.value === status;
    }
    await beat();
    listen();
  }

  // --- my status: sent now and again well within the heartbeat time-out -------------
  async function beat() {
    clearTimeout(heartbeat);
    const reply = await api("PUT", "/api/v1/presence/client", { client_id: clientId, status });
    if (reply.status === 401) {
      showSignIn(t("sessionEnded"));
      return;
    }
    notice(reply.status === 0 ? t("offlineNetwork") : "");
    if (reply.status === 200) showMerged(reply.data.client);
    const every = Math.max(1, ((desk && desk.heartbeat_seconds) || 90) / 3);
    heartbeat = setTimeout(beat, every * 1000);
  }

  for (const radio of document.querySelectorAll("input[name=status]")) {
    radio.addEventListener("change", () => {
      if (!radio.checked) return;
      status = radio.value;
      sessionStorage.setItem("callrouter-status", status);
      beat();
    });
  }

  function showMerged(client) {
    $("status-shown").textContent = t("shownAs", { status: t(client) });
  }

  // --- live: my desk, and everyone's presence ----------------------------------------
  function listen() {
    const mine = new EventSource("/api/v1/me/events");
    mine.addEventListener("desk", (event) => {
      deskEvents += 1;
      renderDesk(JSON.parse(event.data));
    });
    // My forwardings or switches changed (here, by a feature code, another client).
    mine.addEventListener("personal", () => {
      loadPersonal();
      loadPlan();
    });
    // Anything in the directory or the rules changed: it may reach my plan (the
    // phones of whom I forward to, a new rule).
    mine.addEventListener("directory", () => loadPlan());
    mine.addEventListener("seats", (event) => {
      seats = JSON.parse(event.data);
      renderColleagues();
    });
    mine.addEventListener("ended", () => showSignIn(t("sessionEnded")));
    const everyone = new EventSource("/api/v1/presence/events");
    everyone.addEventListener("snapshot", (event) => {
      people.clear();
      for (const person of JSON.parse(event.data)) people.set(person.extension, person);
      renderColleagues();
    });
    everyone.addEventListener("presence", (event) => {
      const person = JSON.parse(event.data);
      people.set(person.extension, person);
      renderColleagues([person.extension]);
    });
    for (const source of [mine, everyone]) {
      // A stream refused (the session ended) is closed for good; a dropped one
      // reconnects by itself.
      source.addEventListener("error", async () => {
        if (source.readyState !== EventSource.CLOSED) return;
        const reply = await api("GET", "/api/v1/me/desk");
        if (reply.status === 401) showSignIn(t("sessionEnded"));
        else if (desk) setTimeout(() => { if (desk) { stop(); enter(); } }, 2000);
      });
    }
    streams = [mine, everyone];
  }

  // Re-rendering a list must not take the keyboard focus away from its button.
  function keepingFocus(render) {
    const focused = document.activeElement && document.activeElement.dataset.focusKey;
    render();
    if (focused) {
      const again = document.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`);
      if (again) again.focus();
    }
  }

  // A list item of parts, separated by commas so that it reads as a sentence (a
  // screen reader reads the text, not the layout).
  function item(parts) {
    const li = document.createElement("li");
    parts = parts.filter(([, text]) => text);
    parts.forEach(([cls, text], index) => {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = index < parts.length - 1 ? text + "," : text;
      li.append(span, " ");
    });
    return li;
  }

  function renderDesk(view) {
    desk = view;
    // What the plan depends on (where I sit, my status, which phones are reachable
    // or busy): a phone that only starts or stops ringing does not change it.
    const key = JSON.stringify([
      view.workplace,
      view.client,
      view.phones.map((p) => [p.endpoint, p.state === "ringing" ? "reachable" : p.state]),
    ]);
    if (key !== planKey) {
      planKey = key;
      loadPlan();
    }
    $("who").textContent = t("signedInAs", { name: view.name, extension: view.extension });
    showMerged(view.client);
    const here = view.workplaces.find((w) => w.id === view.workplace);
    $("workplace-now").textContent = view.workplace
      ? t("sittingAt", { workplace: here ? here.name : view.workplace })
      : t("notSitting");
    $("workplace-policy").textContent =
      view.occupied_workplace === "refuse" ? t("policyRefuse") : t("policyDisplace");
    keepingFocus(() => {
      const list = $("workplaces");
      list.replaceChildren();
      for (const workplace of view.workplaces) {
        const mine = workplace.id === view.workplace;
        const who = workplace.occupant;
        const li = item([
          ["name", workplace.name],
          ["code", t("code", { code: workplace.code })],
          [
            "occupant",
            mine ? t("youSitHere") : who ? t("occupiedBy", { name: who.name, extension: who.extension }) : t("free"),
          ],
        ]);
        li.classList.toggle("mine", mine);
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = mine ? t("leave") : t("sitHere");
        button.dataset.focusKey = "workplace:" + workplace.id;
        button.addEventListener("click", () => (mine ? leave(workplace) : sitDown(workplace)));
        li.append(button);
        list.append(li);
      }
      if (view.workplaces.length === 0) list.append(item([["empty", t("noWorkplaces")]]));
    });
    const phones = $("phones");
    phones.replaceChildren();
    for (const phone of view.phones) {
      const li = item([
        ["endpoint", phone.endpoint],
        ["source", phone.source === "own" ? t("own") : t("atWorkplace")],
        ["state", t(phone.state)],
      ]);
      li.dataset.state = phone.state;
      phones.append(li);
    }
    if (view.phones.length === 0) phones.append(item([["empty", t("noPhones")]]));
  }

  async function sitDown(workplace) {
    const message = $("workplace-message");
    const reply = await api("POST", "/api/v1/login", { workplace: workplace.id });
    if (reply.status === 200) {
      const gone = reply.data.displaced;
      const person = gone && people.get(gone);
      message.textContent = gone
        ? t("displaced", { workplace: workplace.name, name: person ? person.name : gone })
        : t("satDown", { workplace: workplace.name });
      refresh();
    } else if (reply.status === 401) {
      showSignIn(t("sessionEnded"));
    } else {
      const reason = reply.data && reply.data.reason;
      message.textContent =
        reason && "reason_" + reason in words
          ? t("reason_" + reason, { workplace: workplace.name })
          : (reply.data && reply.data.detail) || t("failed", { status: reply.status || "-" });
    }
  }

  async function leave(workplace) {
    const reply = await api("POST", "/api/v1/logout");
    if (reply.status === 200) {
      $("workplace-message").textContent = t("left", { workplace: workplace.name });
      refresh();
    } else if (reply.status === 401) {
      showSignIn(t("sessionEnded"));
    } else {
      $("workplace-message").textContent = t("failed", { status: reply.status || "-" });
    }
  }

  async function refresh() {
    // The event stream says so too; this shows my own change without waiting for it.
    const before = deskEvents;
    const reply = await api("GET", "/api/v1/me/desk");
    if (reply.status === 200 && deskEvents === before) renderDesk(reply.data);
  }

  // --- my forwarding and my switches ----------------------------------------------
  let personalLoads = 0;
  async function loadPersonal() {
    const mine = ++personalLoads; // only the newest answer is shown
    const [forwarding, switches] = await Promise.all([
      api("GET", "/api/v1/me/forwarding"),
      api("GET", "/api/v1/me/switches"),
    ]);
    if (mine !== personalLoads) return;
    if (forwarding.status === 200) renderForwarding(forwarding.data);
    if (switches.status === 200) renderSwitches(switches.data);
  }

  function forwardState(kind) {
    if (kind.set_by === "user") return t("forwardMine", { to: kind.own });
    if (kind.set_by === "admin") {
      const only = kind.admin.length === 1 && !kind.admin[0].calls && !kind.admin[0].when && !kind.admin[0].unless;
      return only ? t("forwardAdmin", { to: kind.admin[0].to }) : t("forwardAdminSome");
    }
    return t("forwardOff");
  }

  function renderForwarding(view) {
    $("forwarding-policy").textContent = t("policy_" + view.user_forwarding);
    const allowed = view.user_forwarding !== "off";
    keepingFocus(() => {
      const list = $("forwards");
      // A change from elsewhere re-renders the list: what is being typed stays.
      const drafts = new Map();
      for (const old of list.querySelectorAll("input[data-saved]")) {
        if (old.value !== old.dataset.saved) drafts.set(old.dataset.focusKey, old.value);
      }
      list.replaceChildren();
      for (const kind of view.kinds) {
        const name = t("kind_" + kind.kind);
        const li = item([
          ["name", name],
          ["state", forwardState(kind)],
          ["hint", kind.own_ignored ? t("forwardIgnored", { to: kind.own }) : ""],
        ]);
        li.dataset.kind = kind.kind;
        const form = document.createElement("form");
        form.className = "forward-form";
        form.noValidate = true;
        const input = document.createElement("input");
        input.id = "forward-" + kind.kind;
        input.name = "to";
        input.maxLength = 21;
        input.autocomplete = "off";
        input.inputMode = view.user_forwarding === "anywhere" ? "tel" : "numeric";
        input.disabled = !allowed;
        input.dataset.focusKey = "forward-input:" + kind.kind;
        input.dataset.saved = kind.own || "";
        input.value = drafts.get(input.dataset.focusKey) ?? input.dataset.saved;
        const label = document.createElement("label");
        label.htmlFor = input.id;
        label.className = "visually-hidden";
        label.textContent = t("forwardTo", { kind: name });
        const set = document.createElement("button");
        set.type = "submit";
        set.textContent = t("forwardSet");
        set.disabled = !allowed;
        set.dataset.focusKey = "forward-set:" + kind.kind;
        set.setAttribute("aria-label", t("forwardSet") + ": " + name);
        form.append(label, input, set);
        if (kind.own) {
          const clear = document.createElement("button");
          clear.type = "button";
          clear.textContent = t("forwardClear");
          clear.dataset.focusKey = "forward-clear:" + kind.kind;
          clear.setAttribute("aria-label", t("forwardClear") + ": " + name);
          clear.addEventListener("click", () => clearForward(kind.kind, name));
          form.append(clear);
        }
        form.addEventListener("submit", (event) => {
          event.preventDefault();
          setForward(kind.kind, name, input.value.trim());
        });
        li.append(form);
        list.append(li);
      }
    });
  }

  function personalProblem(element, reply) {
    if (reply.status === 401) {
      showSignIn(t("sessionEnded"));
      return;
    }
    const detail = reply.data && typeof reply.data.detail === "string" ? reply.data.detail : "";
    element.textContent = detail || (reply.status === 422 ? t("forwardBadTarget") : t("failed", { status: reply.status || "-" }));
  }

  async function setForward(kind, name, to) {
    const message = $("forwarding-message");
    if (!/^\+?[0-9]{1,20}$/.test(to)) {
      message.textContent = t("forwardBadTarget");
      return;
    }
    const reply = await api("PUT", "/api/v1/me/forwarding/" + kind, { to });
    if (reply.status === 200) {
      message.textContent = t("forwardSaved", { kind: name, to });
      renderForwarding(reply.data);
      loadPlan();
    } else {
      personalProblem(message, reply);
    }
  }

  async function clearForward(kind, name) {
    const message = $("forwarding-message");
    const reply = await api("DELETE", "/api/v1/me/forwarding/" + kind);
    if (reply.status === 200) {
      message.textContent = t("forwardCleared", { kind: name });
      renderForwarding(reply.data);
      loadPlan();
      const again = document.querySelector(`[data-focus-key="forward-input:${kind}"]`);
      if (again) again.focus(); // the clear button is gone
    } else {
      personalProblem(message, reply);
    }
  }

  function renderSwitches(view) {
    $("no-switches").hidden = view.length > 0;
    keepingFocus(() => {
      const list = $("switches");
      list.replaceChildren();
      for (const entry of view) {
        const li = document.createElement("li");
        const label = document.createElement("label");
        label.className = "switch";
        const box = document.createElement("input");
        box.type = "checkbox";
        box.setAttribute("role", "switch");
        box.checked = entry.on;
        box.dataset.focusKey = "switch:" + entry.name;
        box.addEventListener("change", () => setSwitch(entry.name, box.checked));
        label.append(box, entry.name);
        const rings = document.createElement("span");
        rings.className = "hint";
        rings.textContent = t("switchRings", { rings: entry.rings.join(", ") });
        li.append(label, rings);
        li.dataset.switch = entry.name;
        list.append(li);
      }
    });
  }

  async function setSwitch(name, on) {
    const message = $("switches-message");
    const reply = await api("PUT", "/api/v1/me/switches/" + encodeURIComponent(name), { on });
    if (reply.status === 200) {
      message.textContent = on ? t("switchOn", { name }) : t("switchOff", { name });
      renderSwitches(reply.data);
      loadPlan();
    } else {
      personalProblem(message, reply);
      loadPersonal();
    }
  }


  // --- how my calls ring: the ring plan of /api/v1/me/plan ---------------------------
  let planKey = null;
  let planLoads = 0;
  async function loadPlan() {
    if (!desk) return;
    const mine = ++planLoads; // only the newest answer is shown
    const query = new URLSearchParams({ external: String($("plan-external").checked) });
    // The picker's "YYYY-MM-DDTHH:MM" as the API's local "YYYY-MM-DD HH:MM".
    const at = $("plan-at").value.slice(0, 16).replace("T", " ");
    if (at) query.set("at", at);
    const reply = await api("GET", "/api/v1/me/plan?" + query);
    if (mine !== planLoads || !desk) return;
    if (reply.status === 200) {
      $("plan-message").textContent = "";
      $("plan").replaceChildren(...planParts(reply.data, [], 3));
    } else if (reply.status === 401) {
      showSignIn(t("sessionEnded"));
    } else {
      $("plan-message").textContent = t("failed", { status: reply.status || "-" });
    }
  }

  $("plan-at").addEventListener("change", () => loadPlan());
  $("plan-now").addEventListener("click", () => {
    $("plan-at").value = "";
    loadPlan();
  });

  for (const radio of document.querySelectorAll("input[name=plan-call]")) {
    radio.addEventListener("change", () => {
      if (radio.checked) loadPlan();
    });
  }

  const seconds = (n) => String(Math.round(n * 10) / 10);

  function whoOf(plan) {
    return plan.user ? t("planFor", { name: plan.user, extension: plan.extension }) : plan.extension;
  }

  function hopText(hop) {
    const me = desk && hop.from === desk.extension;
    const by = hop.set_by === "admin" ? t("hopByAdmin") : me ? t("hopByYou") : t("hopByUser");
    return t("hop", { from: hop.from, kind: t("hopKind_" + hop.kind), to: hop.to, by });
  }

  // The resolver says why an entry does not apply in the words of the rules
  // ("user 401 followme[1]: external calls only"); the page says it in the user's.
  const SKIPPED = /^(?:user|workplace) (\S+) (followme|ring|forward\.(\w+))\[(\d+)\]: (.*)$/;
  function skippedText(text) {
    const parts = SKIPPED.exec(text);
    if (!parts) return text;
    const [, owner, list, kind, index, why] = parts;
    const n = Number(index) + 1;
    const where =
      list === "followme"
        ? t("skipFollowme", { n })
        : list === "ring"
          ? t("skipWorkplace", { workplace: (desk && desk.workplaces.find((w) => w.id === owner) || {}).name || owner, n })
          : t("skipForward", { kind: t("hopKind_" + kind), n });
    return where + ": " + reasonText(why);
  }

  function reasonText(why) {
    let parts;
    if (why === "internal calls only") return t("why_internal");
    if (why === "external calls only") return t("why_external");
    if ((parts = /^switched off by the user \((.+)\)$/.exec(why))) return t("why_switch", { name: parts[1] });
    if ((parts = /^when (\S+): not in the schedule at (.+)$/.exec(why)))
      return t("why_when_not", { schedule: parts[1], at: parts[2] });
    if ((parts = /^unless (\S+): in the schedule at (.+)$/.exec(why)))
      return t("why_unless_in", { schedule: parts[1], at: parts[2] });
    if ((parts = /^(?:when|unless) (\S+): the time of the call is not known$/.exec(why)))
      return t("why_no_time", { schedule: parts[1] });
    return why;
  }

  function list(label, items) {
    const ul = document.createElement("ul");
    ul.setAttribute("aria-label", label);
    ul.append(...items);
    return ul;
  }

  // A list with a visible caption that is also its name.
  let captions = 0;
  function captioned(label, items) {
    const caption = paragraph(label, "plan-caption");
    caption.id = "plan-caption-" + ++captions;
    const ul = list(label, items);
    ul.removeAttribute("aria-label");
    ul.setAttribute("aria-labelledby", caption.id);
    return [caption, ul];
  }

  function paragraph(text, cls) {
    const p = document.createElement("p");
    p.className = cls;
    p.textContent = text;
    return p;
  }

  // One plan as elements: the forwardings that led to it (those after ``before``),
  // its legs, what does not ring now and why, and under a heading per kind where the
  // call goes on when it ends busy or unanswered, nested as far as the chain goes.
  function planParts(plan, before, level) {
    const parts = [];
    const who = whoOf(plan);
    const hops = plan.forwarded.slice(before.length);
    if (hops.length > 0) {
      parts.push(...captioned(t("planForwarded", { who }), hops.map((hop) => item([["hop", hopText(hop)]]))));
    }
    const problem = plan.status === "ok" ? "" : t("planStatus_" + plan.status.replace(/-/g, "_"), { extension: plan.extension });
    if (problem) parts.push(paragraph(problem, "plan-status"));
    if (plan.legs.length > 0) {
      const stop = Math.max(...plan.legs.map((leg) => leg.stop));
      parts.push(paragraph(t("planRingsFor", { who, stop: seconds(stop) }), "plan-status"));
      parts.push(
        list(
          t("planLegs", { who }),
          plan.legs.map((leg) => {
            const li = item([
              ["endpoint", leg.endpoint],
              ["time", t("fromTo", { start: seconds(leg.start), stop: seconds(leg.stop) })],
              ["source", t("legSource_" + leg.source)],
              ["confirm", leg.confirm ? t("pressOne") : ""],
            ]);
            li.dataset.source = leg.source;
            return li;
          }),
        ),
      );
    } else if (!problem) {
      parts.push(paragraph(t("planNoLegs"), "plan-status"));
    }
    const notNow = [
      ...plan.skipped.map((why) => item([["why", skippedText(why)]])),
      ...plan.unreachable.map((endpoint) => item([["endpoint", endpoint], ["why", t("unreachableNow")]])),
      ...plan.elsewhere.map((endpoint) => item([["endpoint", endpoint], ["why", t("elsewhereNow")]])),
    ];
    if (notNow.length > 0) parts.push(...captioned(t("planNotNow", { who }), notNow));
    // What the router warns of (a forwarding that would loop, a chain cut short),
    // in the rules' words.
    const warnings = (plan.warnings || []).map((text) => item([["why", text]]));
    if (warnings.length > 0) parts.push(...captioned(t("planWarnings"), warnings));
    for (const [kind, next] of Object.entries(plan.then || {})) {
      const hop = plan.forward_on[kind];
      const to = hop && next.extension === hop.to ? whoOf(next) : hop ? hop.to : next.extension;
      const block = document.createElement("div");
      block.className = "plan-then";
      const heading = document.createElement("h" + Math.min(level, 6));
      heading.textContent = t("then_" + kind, { to });
      block.append(heading, ...planParts(next, [...plan.forwarded, hop], level + 1));
      parts.push(block);
    }
    return parts;
  }

  // --- colleagues --------------------------------------------------------------------
  function stateOf(person) {
    if (person.phone.on_call) return "on_call";
    if (person.phone.ringing) return "ringing";
    if (person.client === "dnd") return "dnd";
    if (person.client === "away") return "away";
    if (person.phone.available) return "free";
    return "offline";
  }

  const rows = new Map(); // extension -> li

  function renderColleagues(only) {
    const list = $("colleagues");
    const query = $("search").value.trim().toLowerCase();
    const me = desk ? desk.extension : null;
    const extensions = only || [...people.keys()].sort();
    for (const extension of extensions) {
      const person = people.get(extension);
      let li = rows.get(extension);
      if (!li) {
        li = document.createElement("li");
        rows.set(extension, li);
      }
      const state = stateOf(person);
      const seat = seats[extension];
      li.dataset.state = state;
      li.replaceChildren(
        ...item([
          ["name", person.name],
          ["extension", person.extension],
          ["state", t("state_" + state)],
          ["seat", seat ? t("sitsAt", { workplace: seat }) : ""],
        ]).childNodes,
      );
      li.hidden = extension === me;
    }
    if (!only) {
      for (const extension of [...rows.keys()]) {
        if (!people.has(extension)) {
          rows.get(extension).remove();
          rows.delete(extension);
        }
      }
      list.replaceChildren(...[...rows.keys()].sort().map((extension) => rows.get(extension)));
    } else {
      for (const extension of only) {
        const li = rows.get(extension);
        if (!li.isConnected) {
          list.replaceChildren(...[...rows.keys()].sort().map((e) => rows.get(e)));
          break;
        }
      }
    }
    let shown = 0;
    for (const [extension, li] of rows) {
      const person = people.get(extension);
      const matches =
        !query ||
        person.name.toLowerCase().includes(query) ||
        person.extension.includes(query);
      li.hidden = extension === me || !matches;
      if (!li.hidden) shown += 1;
    }
    $("nobody").hidden = shown > 0 || people.size === 0;
  }

  $("search").addEventListener("input", () => renderColleagues());

  // --- start -------------------------------------------------------------------------
  enter();
})();
