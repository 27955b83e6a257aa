// The voting page's script. The server renders everything a voter reads; this adds what
// needs the API: the captcha, submitting a vote and following it to its decision, the
// countdown, live results and the prize-draw entry. No framework and no build step: the
// page must load on a closed network and on the in-app browsers of messaging apps.
// Text from the API or the catalog only ever reaches the page through textContent.
(() => {
  "use strict";

  const dataElement = document.getElementById("poll-data");
  if (!dataElement) return;
  const D = JSON.parse(dataElement.textContent);
  const S = D.strings;
  const API = D.api;
  const POLL_PATH = "/polls/" + encodeURIComponent(D.poll);
  const TOKEN_KEY = "votes.voter";
  const LOCALE = D.lang === "zh" ? "zh-CN" : "en";
  const EN_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(" ");
  // Phones' clocks are often off by minutes; count down on the server's clock instead.
  const clockOffset = Date.parse(D.server_now) - Date.now();
  const now = () => Date.now() + clockOffset;
  const $ = (id) => document.getElementById(id);
  const pad2 = (n) => String(n).padStart(2, "0");
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  // After a vote is taken, when to first ask for its decision (see followVote).
  const FIRST_LOOK_MS = 300;

  function t(key, values) {
    return S[key].replace(/\{(\w+)\}/g, (whole, name) =>
      values && name in values ? String(values[name]) : whole,
    );
  }

  // A counted noun: the string's "_one" or "_other" form, as the page's language counts n.
  // Older in-app browsers lack Intl.PluralRules; English's rule is the one needed there.
  const plurals = "PluralRules" in Intl
    ? new Intl.PluralRules(LOCALE)
    : { select: (n) => (n === 1 && LOCALE === "en" ? "one" : "other") };
  function tn(key, n, values) {
    return t(key + (plurals.select(n) === "one" ? "_one" : "_other"), values);
  }

  // Node.replaceChildren, which older in-app browsers lack.
  function fill(node, ...children) {
    node.textContent = "";
    node.append(...children);
  }

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  // ---- Times, always on the poll's clock (the voting day is defined there) ----

  const partsFormat = new Intl.DateTimeFormat("en-US", {
    timeZone: D.timezone,
    year: "numeric",
    month: "numeric",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    hour12: false, // hourCycle is newer; some browsers then call midnight "24"
  });

  function zoneParts(instant) {
    const parts = {};
    for (const p of partsFormat.formatToParts(new Date(instant))) parts[p.type] = p.value;
    return {
      year: Number(parts.year),
      month: Number(parts.month),
      day: Number(parts.day),
      hm: (parts.hour === "24" ? "00" : parts.hour) + ":" + parts.minute,
    };
  }

  function formatDay(year, month, day) {
    return D.lang === "zh"
      ? year + "年" + month + "月" + day + "日"
      : day + " " + EN_MONTHS[month - 1] + " " + year;
  }

  function formatDateTime(iso) {
    const p = zoneParts(Date.parse(iso));
    return formatDay(p.year, p.month, p.day) + (D.lang === "zh" ? " " : ", ") + p.hm;
  }

  function formatVotingDay(day) {
    const [y, m, d] = String(day).split("-").map(Number);
    return y && m && d ? formatDay(y, m, d) : String(day);
  }

  // [year, month, day] of `day` (YYYY-MM-DD on the poll's clock), or of today there.
  function dayParts(day) {
    if (day) return String(day).split("-").map(Number);
    const p = zoneParts(now());
    return [p.year, p.month, p.day];
  }

  // When the day after `day` (YYYY-MM-DD on the poll's clock) begins: plain date arithmetic,
  // because midnight on the poll's clock is what the voter is told, whatever their zone.
  function nextDayStarts(day) {
    const [y, m, d] = dayParts(day);
    const next = new Date(Date.UTC(y, m - 1, d + 1));
    const label = formatDay(next.getUTCFullYear(), next.getUTCMonth() + 1, next.getUTCDate());
    return label + (D.lang === "zh" ? " " : ", ") + "00:00";
  }

  // Whether voting closes before the day after `day` begins: on the closing day there is
  // no "come back tomorrow".
  function lastVotingDay(day) {
    const [y, m, d] = dayParts(day);
    const next = new Date(Date.UTC(y, m - 1, d + 1));
    const nextKey = next.getUTCFullYear() * 10000 + (next.getUTCMonth() + 1) * 100
      + next.getUTCDate();
    const close = zoneParts(Date.parse(D.closes_at));
    const closeKey = close.year * 10000 + close.month * 100 + close.day;
    return nextKey > closeKey || (nextKey === closeKey && close.hm === "00:00");
  }

  // A line naming a time, and the poll's clock it is on.
  function tAt(key, time) {
    return t(key, { time: time, zone: D.zone_label });
  }

  // What the voter is told about voting again after `day`'s votes are used up.
  function nextVoteLine(day, decision) {
    if (lastVotingDay(day)) return tAt("last_day", formatDateTime(D.closes_at));
    return tAt("next_vote", decision ? comeBackAt(decision) : nextDayStarts(day));
  }

  function comeBackAt(decision) {
    return decision.next_vote_at
      ? formatDateTime(decision.next_vote_at)
      : nextDayStarts(decision.day);
  }

  const numberFormat = new Intl.NumberFormat(LOCALE);

  // ---- Voter token: an anonymous device identity, kept across visits ----

  let memoryToken = null;

  function storage() {
    try {
      return window.localStorage;
    } catch {
      return null; // private modes and some in-app browsers refuse storage
    }
  }

  function savedSession() {
    let session = memoryToken;
    const store = storage();
    if (store) {
      try {
        session = JSON.parse(store.getItem(TOKEN_KEY) || "null") || session;
      } catch {
        session = memoryToken;
      }
    }
    // A token about to expire would fail mid-vote: treat it as gone.
    if (session && Date.parse(session.expires_at) - 60000 > now()) return session;
    return null;
  }

  class SessionError extends Error {
    constructor(status) {
      super("session " + status);
      this.status = status;
    }
  }

  async function newSession() {
    const response = await api("POST", "/session");
    if (!response.ok || !response.data || !response.data.voter_token) {
      throw new SessionError(response.status);
    }
    memoryToken = response.data;
    const store = storage();
    if (store) {
      try {
        store.setItem(TOKEN_KEY, JSON.stringify(response.data));
      } catch {
        // full or refused: the in-memory copy serves this visit
      }
    }
    return response.data;
  }

  async function voterToken(renew) {
    const saved = renew ? null : savedSession();
    return (saved || (await newSession())).voter_token;
  }

  // ---- API ----

  async function api(method, path, body, token) {
    const headers = { Accept: "application/json, application/problem+json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    return { status: response.status, ok: response.ok, data, headers: response.headers };
  }

  // A call as the voter; an expired or revoked token is replaced once, transparently.
  async function asVoter(method, path, body) {
    let response = await api(method, path, body, await voterToken(false));
    if (response.status === 401) response = await api(method, path, body, await voterToken(true));
    return response;
  }

  function problemCode(response) {
    return (response.data && response.data.code) || "";
  }

  // ---- Field errors ----

  function setFieldError(errorNode, input, message) {
    if (!errorNode) return;
    errorNode.textContent = message || "";
    errorNode.hidden = !message;
    if (input) {
      if (message) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
  }

  // ---- Voting ----

  const form = $("vote-form");
  const outcome = $("outcome");
  const captchaImage = $("captcha-image");
  const captchaAnswer = $("captcha-answer");
  const captchaError = $("captcha-error");
  const choiceError = $("choice-error");
  const submitButton = $("vote-submit");
  let captchaSeq = 0;
  let captchaTimer = null;
  let busy = false;

  async function loadCaptcha() {
    const seq = ++captchaSeq;
    clearTimeout(captchaTimer);
    captchaImage.dataset.captchaId = "";
    captchaImage.dataset.expiresAt = "";
    captchaImage.removeAttribute("src");
    captchaImage.alt = S.captcha_loading;
    captchaAnswer.value = "";
    let response = null;
    try {
      response = await api("POST", "/captcha");
    } catch {
      response = null;
    }
    if (seq !== captchaSeq) return; // a newer request superseded this one
    if (!response || !response.ok || !response.data || !response.data.captcha_id) {
      captchaImage.alt = S.captcha_failed;
      setFieldError(captchaError, null, S.captcha_failed);
      return;
    }
    setFieldError(captchaError, captchaAnswer, "");
    captchaImage.src = response.data.image;
    captchaImage.alt = S.captcha_alt;
    captchaImage.dataset.captchaId = response.data.captcha_id;
    captchaImage.dataset.expiresAt = response.data.expires_at;
    // Swap an idle captcha just before it expires, so a voter who reads first is not
    // rejected for a code that died while the page sat open.
    const left = Date.parse(response.data.expires_at) - now() - 5000;
    if (left > 0) captchaTimer = setTimeout(loadCaptcha, left);
  }

  // A phone that slept past the captcha's expiry wakes with its timer late (timers do not
  // run while a page is frozen): the expiry is checked again on return and before a vote.
  function captchaFresh() {
    return Date.parse(captchaImage.dataset.expiresAt || "") - now() > 3000;
  }

  function renewStaleCaptcha() {
    if (form && !form.hidden && !busy && captchaImage.dataset.captchaId && !captchaFresh()) {
      loadCaptcha();
    }
  }

  // The same code spoken, for a voter who cannot read the picture. A stale code is
  // renewed first, so what is heard is what will be judged.
  let captchaAudio = null;
  async function listenCaptcha() {
    if (!captchaImage.dataset.captchaId || !captchaFresh()) await loadCaptcha();
    const id = captchaImage.dataset.captchaId;
    if (!id) return;
    if (captchaAudio) captchaAudio.pause();
    captchaAudio = new Audio(API + "/captcha/" + encodeURIComponent(id) + "/audio");
    setFieldError(captchaError, null, "");
    try {
      await captchaAudio.play();
    } catch {
      setFieldError(captchaError, null, S.captcha_listen_failed);
    }
  }

  function setBusy(value) {
    busy = value;
    submitButton.disabled = value;
    submitButton.textContent = value ? S.submitting : S.submit;
    form.setAttribute("aria-busy", value ? "true" : "false");
  }

  // The outcome box's content, shown without moving the reader (see showOutcome).
  function renderOutcome(kind, title, lines) {
    outcome.className = "outcome " + kind;
    fill(outcome);
    let heading = null;
    if (title) {
      heading = el("h3", title);
      heading.tabIndex = -1;
      outcome.append(heading);
    }
    for (const line of lines) outcome.append(line instanceof Node ? line : el("p", line));
    return heading;
  }

  function showOutcome(kind, title, lines, focusTarget) {
    const heading = renderOutcome(kind, title, lines);
    const target = focusTarget || heading;
    if (target) {
      target.focus({ preventScroll: true });
      outcome.scrollIntoView({ block: "center", behavior: "smooth" });
    }
  }

  // ---- Today's votes, remembered on this device ----
  // A voter who comes back on a day they have used up sees so at once, with when they can
  // vote again, instead of typing a captcha only to be turned away. Antifraud still
  // decides every vote; this record only spares the voter (and the captcha pool) the trip.
  // It is kept per poll and belongs to the voter id that cast the votes.

  const VOTED_KEY = "votes.voted." + D.poll;

  function pollToday() {
    const p = zoneParts(now());
    return p.year + "-" + pad2(p.month) + "-" + pad2(p.day);
  }

  function votedRecord() {
    const store = storage();
    const session = savedSession();
    if (!store || !session) return null;
    try {
      const record = JSON.parse(store.getItem(VOTED_KEY) || "null");
      if (record && record.voter_id === session.voter_id && Array.isArray(record.votes)) {
        return record;
      }
    } catch {
      // unreadable: as if nothing was kept
    }
    return null;
  }

  function rememberDecision(decision) {
    const store = storage();
    const session = savedSession();
    // A vote decided for a day that has already passed tells nothing about today.
    if (!store || !session || !decision.day || decision.day !== pollToday()) return;
    let record = votedRecord();
    if (!record || record.day !== decision.day) {
      record = { voter_id: session.voter_id, day: decision.day, votes: [], full: false };
    }
    if (decision.status === "accepted" && !record.votes.includes(decision.vote_id)) {
      record.votes.push(decision.vote_id);
    }
    if (decision.reason === "daily_limit") record.full = true;
    try {
      store.setItem(VOTED_KEY, JSON.stringify(record));
    } catch {
      // full or refused: the voter will simply see the form next time
    }
  }

  // Today's record when this voter has used up today's votes, else null.
  function usedUpToday() {
    const record = votedRecord();
    if (!record || record.day !== pollToday()) return null;
    return record.full || record.votes.length >= D.daily_limit ? record : null;
  }

  // Instead of the form: that today's votes are in, and when the next day begins. The
  // form comes back by itself when it does.
  function showVotedToday(record) {
    form.hidden = true;
    const lines = [t("vote_day", { day: formatVotingDay(record.day) })];
    lines.push(nextVoteLine(record.day));
    const last = record.votes[record.votes.length - 1];
    if (last) lines.push(el("p", t("vote_id", { id: last }), "small"));
    renderOutcome("accepted", S.voted_today_title, lines);
    const watch = setInterval(() => {
      if (pollToday() === record.day) return;
      clearInterval(watch);
      renderOutcome("", null, []);
      openForm();
    }, 15000);
  }

  function showAccepted(decision) {
    rememberDecision(decision);
    const lines = [S.accepted_body];
    if (decision.day) lines.push(t("vote_day", { day: formatVotingDay(decision.day) }));
    if (D.daily_limit === 1) lines.push(nextVoteLine(decision.day, decision));
    lines.push(el("p", t("vote_id", { id: decision.vote_id }), "small"));
    if (D.lottery && !lotteryEntered) {
      const link = el("a", S.lottery_submit, "button secondary");
      link.href = "#lottery";
      lines.push(link);
    }
    showOutcome("accepted", S.accepted_title, lines);
    // A voter who has not entered the draw has no day count to show; one whose entry
    // could not be looked up when the page loaded may have one.
    if (D.lottery && (lotteryEntered || entryUnknown)) followEntry(decision.day);
  }

  // The draw counts days from accepted votes a moment after their decision, and longer
  // while the lottery service catches up. Show an entrant the vote's day counted: look
  // 2 s after the decision, then less and less often until the entry counts that day,
  // for a minute at most (about eight reads), or until the service says there is none.
  function followEntry(day) {
    const deadline = Date.now() + 60000;
    let delay = 2000;
    const look = async () => {
      const entry = await refreshEntry();
      if (entry === false) return;
      if (entry && (!day || (entry.last_day && entry.last_day >= day))) return;
      delay = Math.min(delay * 1.5, 10000);
      if (Date.now() + delay <= deadline) setTimeout(look, delay);
    };
    setTimeout(look, delay);
  }

  const REASONS = {
    captcha_wrong: "reason_captcha_wrong",
    captcha_malformed: "reason_captcha_wrong",
    captcha_expired: "reason_captcha_expired",
    captcha_reused: "reason_captcha_reused",
    rate_limited_ip: "reason_rate_limited",
    rate_limited_subnet: "reason_rate_limited",
    rate_limited_voter: "reason_rate_limited",
    poll_closed: "reason_poll_closed",
    poll_not_open: "reason_poll_not_open",
    unknown_poll: "reason_unknown_poll",
    invalid_choice: "reason_invalid_choice",
  };

  function showRejected(decision) {
    rememberDecision(decision);
    const reason = decision.reason || "";
    let message;
    if (reason === "daily_limit") {
      message = lastVotingDay(decision.day)
        ? tAt("reason_daily_limit_last", formatDateTime(D.closes_at))
        : tAt("reason_daily_limit", comeBackAt(decision));
    } else if (REASONS[reason]) {
      message = S[REASONS[reason]];
    } else {
      message = t("reason_other", { reason });
    }
    // For a captcha problem the next step is typing the new code: put the cursor there.
    const focus = reason.startsWith("captcha_") ? captchaAnswer : null;
    showOutcome("rejected", S.rejected_title, [message], focus);
    if (reason === "poll_closed") form.hidden = true;
  }

  function showStillPending(voteId) {
    const again = el("button", S.check_again, "button secondary");
    again.type = "button";
    again.addEventListener("click", async () => {
      if (busy) return;
      setBusy(true);
      try {
        await followVote(voteId, 0);
      } finally {
        setBusy(false);
      }
    });
    showOutcome("pending", null, [t("still_pending", { id: voteId }), again], again);
  }

  // Decisions arrive in well under a second; back off gently and give up after ~20 s.
  // A vote the edge has just taken is not decided yet (the judge reads submissions in
  // batches, a tenth of a second apart or so), and every look is a database read: the
  // first look waits `firstLookMs`.
  async function followVote(voteId, firstLookMs) {
    showOutcome("pending", null, [S.pending]);
    const deadline = Date.now() + 20000;
    let delay = 300;
    await sleep(firstLookMs);
    for (;;) {
      let response = null;
      try {
        const saved = savedSession();
        response = await api("GET", "/votes/" + encodeURIComponent(voteId), undefined,
          saved && saved.voter_token);
      } catch {
        response = null;
      }
      const decision = response && response.ok ? response.data : null;
      if (decision && decision.status === "accepted") return showAccepted(decision);
      if (decision && decision.status === "rejected") return showRejected(decision);
      delay = Math.min(delay * 1.5, 2000);
      if (Date.now() + delay > deadline) return showStillPending(voteId);
      await sleep(delay);
    }
  }

  function showSubmitError(response) {
    const code = problemCode(response);
    const status = response.status;
    // The edge refuses some votes itself (closed poll, malformed captcha, bad choice) with
    // the same codes the judge uses later: explain them the same way.
    if (REASONS[code]) return showRejected({ reason: code });
    let message;
    if (status === 401) message = S.error_session;
    else if (status === 404) message = S.reason_unknown_poll;
    else if (status === 429) message = S.reason_rate_limited;
    else if (status === 422 || status === 413) {
      message = t("error_invalid", { detail: (response.data && response.data.detail) || code });
    } else message = S.error_busy; // 503 broker_unavailable and any other failure: nothing kept
    showOutcome("error", S.rejected_title, [message]);
  }

  async function submitVote(event) {
    event.preventDefault();
    if (busy) return;
    setFieldError(choiceError, null, "");
    setFieldError(captchaError, captchaAnswer, "");
    const choice = form.querySelector('input[name="choice"]:checked');
    if (!choice) {
      setFieldError(choiceError, null, S.need_choice);
      form.querySelector('input[name="choice"]').focus();
      return;
    }
    const answer = captchaAnswer.value.trim();
    if (!answer) {
      setFieldError(captchaError, captchaAnswer, S.need_captcha);
      captchaAnswer.focus();
      return;
    }
    const captchaId = captchaImage.dataset.captchaId;
    if (!captchaId) {
      loadCaptcha();
      return;
    }
    if (!captchaFresh()) {
      await loadCaptcha(); // it clears the field's error once loaded: say why after it
      if (captchaImage.dataset.captchaId) {
        setFieldError(captchaError, captchaAnswer, S.captcha_renewed);
      }
      captchaAnswer.focus();
      return;
    }
    setBusy(true);
    showOutcome("pending", null, [S.pending]);
    try {
      const response = await asVoter("POST", POLL_PATH + "/votes", {
        choice: choice.value,
        captcha_id: captchaId,
        captcha_answer: answer,
      });
      // Ids are single-use, whatever the answer; a vote refused before it was recorded
      // (503: nothing stored; 429) leaves the captcha unused, so the voter just resends.
      if (response.status !== 503 && response.status !== 429) loadCaptcha();
      if (response.ok && response.data && response.data.vote_id) {
        await followVote(response.data.vote_id, FIRST_LOOK_MS);
      } else {
        showSubmitError(response);
      }
    } catch (error) {
      let message = S.error_network;
      if (error instanceof SessionError) {
        // No vote was sent: the captcha stays. Too many sessions from this network (a
        // shared address) passes within a minute; reloading would not help.
        message = error.status === 429 ? S.reason_rate_limited : S.error_session;
      } else {
        loadCaptcha(); // the vote may have reached the edge: its captcha may be spent
      }
      showOutcome("error", S.rejected_title, [message]);
    } finally {
      setBusy(false);
    }
  }

  function openForm() {
    form.hidden = false;
    loadCaptcha();
  }

  function startVoting() {
    if (!form) return;
    form.addEventListener("submit", submitVote);
    $("captcha-refresh").addEventListener("click", () => {
      loadCaptcha();
      captchaAnswer.focus();
    });
    $("captcha-listen").addEventListener("click", listenCaptcha);
    form.addEventListener("change", (event) => {
      if (event.target.name === "choice") setFieldError(choiceError, null, "");
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) renewStaleCaptcha();
    });
    window.addEventListener("pageshow", renewStaleCaptcha);
    const usedUp = usedUpToday();
    if (usedUp) showVotedToday(usedUp);
    else openForm();
  }

  // ---- Countdown ----

  // Something on the page a reload would take from the voter: a vote on its way, its
  // outcome, or a draw entry being typed.
  function voterIsBusy() {
    if (busy || (outcome && outcome.childElementCount > 0)) return true;
    const lotteryForm = $("lottery-form");
    return Boolean(lotteryForm && !lotteryForm.hidden
      && ($("lottery-name").value.trim() || $("lottery-phone").value.trim()));
  }

  function startCountdown() {
    const box = $("countdown");
    if (!box) return;
    const value = $("countdown-value");
    // The moment passed with the page open: the server renders the new state. Unless
    // the voter is in the middle of something: a vote in flight is followed to its
    // outcome, which stays; the vote form goes (a vote now would be refused) and a
    // button offers the new page.
    const reloadWhenIdle = () => {
      if (busy) {
        value.textContent = S.countdown_done_wait;
        setTimeout(reloadWhenIdle, 500);
        return;
      }
      if (!voterIsBusy()) {
        value.textContent = S.countdown_done;
        setTimeout(() => window.location.reload(), 1500);
        return;
      }
      if (form && D.state === "open") form.hidden = true;
      const reload = el("button", S.countdown_reload, "button secondary");
      reload.type = "button";
      reload.addEventListener("click", () => window.location.reload());
      fill(value, S.countdown_done_wait, " ", reload);
    };
    const target = Date.parse(D.state === "upcoming" ? D.opens_at : D.closes_at);
    // Reload only when the moment passes while this page is open: the server then renders
    // the new state. A page that loaded already past it must not reload in a loop.
    const armed = target > now();
    const tick = () => {
      const left = target - now();
      if (left <= 0) {
        if (armed) reloadWhenIdle();
        else value.textContent = S.countdown_done;
        return;
      }
      const s = Math.floor(left / 1000);
      const days = Math.floor(s / 86400);
      const clock = pad2(Math.floor((s % 86400) / 3600)) + ":"
        + pad2(Math.floor((s % 3600) / 60)) + ":" + pad2(s % 60);
      value.textContent = (days > 0 ? t("countdown_days", { n: days }) + " " : "") + clock;
      setTimeout(tick, (left % 1000) + 20);
    };
    box.hidden = false;
    tick();
  }

  // ---- Results ----

  function startResults() {
    if (!D.results_visible) return;
    const bars = $("results-bars");
    const status = $("results-status");
    const total = $("results-total");
    let stream = null;
    let pollTimer = null;
    let final = false;

    function render(result) {
      const counts = result.counts || {};
      const sum = typeof result.total === "number"
        ? result.total
        : Object.values(counts).reduce((a, b) => a + b, 0);
      for (const row of bars.children) {
        const n = counts[row.dataset.option] || 0;
        const share = sum ? (n * 100) / sum : 0;
        row.querySelector(".bar-count").textContent =
          tn("results_votes", n, { n: numberFormat.format(n) }) + " · " + share.toFixed(1) + "%";
        row.querySelector(".bar-fill").style.width = share + "%";
      }
      bars.hidden = false;
      total.textContent = tn("results_total", sum, { n: numberFormat.format(sum) });
      final = Boolean(result.final);
      const label = final ? S.results_final : S.results_live;
      status.textContent = result.as_of
        ? label + " · " + tAt("results_as_of", formatDateTime(result.as_of))
        : label;
      if (final) stop();
    }

    function hide() {
      bars.hidden = true;
      total.textContent = "";
      status.textContent = S.results_hidden;
      stop();
    }

    async function fetchOnce() {
      try {
        const response = await api("GET", POLL_PATH + "/results");
        if (response.status === 403) {
          hide();
          return false;
        }
        if (response.ok && response.data) {
          render(response.data);
          return true;
        }
      } catch {
        // fall through: shown below, retried by the poller
      }
      status.textContent = S.results_unavailable;
      return true;
    }

    function stop() {
      if (stream) stream.close();
      stream = null;
      clearInterval(pollTimer);
      pollTimer = null;
    }

    // SSE first; if the stream is refused outright, fall back to a slow poll.
    function follow() {
      if (final || document.hidden || stream) return;
      if (!("EventSource" in window)) {
        pollTimer = pollTimer || setInterval(fetchOnce, 15000);
        return;
      }
      stream = new EventSource(API + POLL_PATH + "/results/stream");
      // The stream names its frames "results"; onmessage would see only unnamed ones.
      stream.addEventListener("results", (event) => {
        try {
          render(JSON.parse(event.data));
        } catch {
          // a malformed frame is skipped; the next one carries the full state
        }
      });
      stream.onerror = () => {
        if (stream && stream.readyState === EventSource.CLOSED) {
          stream = null;
          pollTimer = pollTimer || setInterval(fetchOnce, 15000);
        }
      };
    }

    // A phone in a pocket should not hold a connection open: pause while hidden.
    document.addEventListener("visibilitychange", async () => {
      if (document.hidden) return stop();
      if (!final && !stream && !pollTimer && (await fetchOnce())) follow();
    });

    fetchOnce().then((visible) => {
      if (visible) follow();
    });
  }

  // ---- Prize draw entry ----

  let lotteryEntered = false;
  let entryUnknown = false; // the last look for this voter's entry failed
  let myEntryId = null;
  let correctingEntry = false; // the voter has opened the form to change their entry

  function lotterySubmitLabel() {
    return lotteryEntered ? S.lottery_update : S.lottery_submit;
  }

  function showEntry(entry) {
    lotteryEntered = true;
    myEntryId = entry.entry_id || null;
    const status = $("lottery-status");
    const lotteryForm = $("lottery-form");
    if (lotteryForm) lotteryForm.hidden = true;
    const lines = [el("p", t("lottery_entered", { phone: entry.phone_masked }), "entered")];
    lines.push(
      el("p", typeof entry.days === "number"
        ? t("lottery_days", { days: entry.days })
        : S.lottery_days_pending),
    );
    // Prizes are delivered by phone: a mistyped number must be correctable while entries
    // are open. A new entry moves this voter's days to it (contract section 8).
    if (lotteryForm) {
      const change = el("button", S.lottery_change, "button secondary");
      change.type = "button";
      change.addEventListener("click", () => {
        correctingEntry = true;
        change.hidden = true;
        $("lottery-submit").textContent = lotterySubmitLabel();
        lotteryForm.hidden = false;
        $("lottery-name").focus();
      });
      lines.push(change);
    }
    fill(status, ...lines);
  }

  // Looks this voter's entry up and shows it: the entry; false when the voter has none
  // (no identity yet, or the service says so); null when the lookup failed.
  async function refreshEntry() {
    if (!$("lottery") || !savedSession()) return false; // no identity: no entry
    try {
      const response = await asVoter("GET", POLL_PATH + "/lottery/entry");
      entryUnknown = !response.ok && response.status !== 404;
      if (!response.ok || !response.data) return entryUnknown ? null : false;
      // A lookup that lands late must not close the form under a voter correcting it.
      if (!correctingEntry) showEntry(response.data);
      return response.data;
    } catch {
      entryUnknown = true;
      return null; // the form stays available; nothing to tell the voter
    }
  }

  async function submitEntry(event) {
    event.preventDefault();
    const lotteryForm = $("lottery-form");
    const name = $("lottery-name");
    const phone = $("lottery-phone");
    const nameError = $("lottery-name-error");
    const phoneError = $("lottery-phone-error");
    const status = $("lottery-status");
    const button = $("lottery-submit");
    setFieldError(nameError, name, "");
    setFieldError(phoneError, phone, "");
    if (!name.value.trim()) {
      setFieldError(nameError, name, S.lottery_need_name);
      name.focus();
      return;
    }
    if (!phone.value.trim()) {
      setFieldError(phoneError, phone, S.lottery_invalid_phone);
      phone.focus();
      return;
    }
    button.disabled = true;
    button.textContent = S.lottery_saving;
    try {
      const response = await asVoter("POST", POLL_PATH + "/lottery/entry", {
        name: name.value.trim(),
        phone: phone.value.trim(),
      });
      const code = problemCode(response);
      if (response.ok && response.data) {
        correctingEntry = false;
        showEntry(response.data);
        refreshEntry();
      } else if (code === "invalid_phone") {
        setFieldError(phoneError, phone, S.lottery_invalid_phone);
        phone.focus();
      } else if (code === "invalid_name") {
        setFieldError(nameError, name, S.lottery_invalid_name);
        name.focus();
      } else if (code === "poll_closed") {
        lotteryForm.hidden = true;
        fill(status, el("p", S.lottery_closed));
      } else {
        fill(status, el("p", S.lottery_failed));
      }
    } catch {
      fill(status, el("p", S.lottery_failed));
    } finally {
      button.disabled = false;
      button.textContent = lotterySubmitLabel();
    }
  }

  // After the close: the draw's outcome, public and masked, and whether this voter won.
  const DRAW_CHECK_MS = 30000;

  async function showDraw() {
    const box = $("lottery-draw");
    if (!box) return;
    let draw = null;
    try {
      const response = await api("GET", POLL_PATH + "/lottery");
      if (response.ok) draw = response.data;
    } catch {
      draw = null;
    }
    if (!draw) {
      // Unreachable for now: the rules and the entry stay on the page; look again later.
      setTimeout(showDraw, DRAW_CHECK_MS);
      return;
    }
    const lines = [];
    if (draw.state === "awaiting_draw") {
      lines.push(el("p", S.lottery_awaiting));
      // The draw comes minutes or hours after the close: a page left open looks again.
      setTimeout(showDraw, DRAW_CHECK_MS);
    } else if (draw.state === "drawn") {
      const winners = draw.winners || [];
      lines.push(el("p", tAt("lottery_drawn", formatDateTime(draw.drawn_at))));
      if (winners.length) {
        lines.push(el("p", S.lottery_winners));
        const list = el("ol", null, "winners");
        for (const winner of winners) {
          list.append(el("li", t("lottery_winner", {
            name: winner.name_masked, phone: winner.phone_masked,
          })));
        }
        lines.push(list);
      } else {
        lines.push(el("p", S.lottery_no_winners));
      }
      if (myEntryId && winners.some((winner) => winner.entry_id === myEntryId)) {
        lines.push(el("p", S.lottery_you_won, "won"));
      }
      const audit = el("a", S.lottery_audit);
      audit.href = API + POLL_PATH + "/lottery/audit";
      const auditLine = el("p");
      auditLine.append(audit);
      lines.push(auditLine);
    } else {
      return;
    }
    fill(box, ...lines);
    box.hidden = false;
  }

  function startLottery() {
    if (!$("lottery")) return;
    const lotteryForm = $("lottery-form"); // absent once the poll has closed
    if (lotteryForm) {
      lotteryForm.hidden = false;
      lotteryForm.addEventListener("submit", submitEntry);
    }
    // The entry first: whether this voter won is read from its id.
    refreshEntry().then(() => {
      if (D.state === "closed") showDraw();
    });
  }

  startVoting();
  startCountdown();
  startResults();
  startLottery();
})();
