/* Todo web: progressive enhancement, no build step, no dependencies.
 *
 * Everything works without this file (forms post, a confirm page guards deletes). With it:
 * - the browser's time zone is sent with task forms and remembered in the `todo_tz` cookie;
 * - complete/reopen/delete happen in place, with a confirm dialog for deletes;
 * - toasts (an aria-live region) report what happened;
 * - live updates arrive over EventSource from /api/v1/events (the gateway), with
 *   reconnect and backoff; task.* events refresh the list, reminder.due shows a toast
 *   and bumps the bell;
 * - the notification bell lists /api/v1/notifications (the notifier).
 * When the gateway or the notifier is missing (404, 502, network error) the page says so
 * ("Live updates unavailable", bell "unavailable") and keeps retrying quietly.
 */
(function () {
  "use strict";

  var TASK_EVENTS = ["task.created", "task.updated", "task.completed", "task.deleted"];
  var EVENTS_URL = "/api/v1/events";
  var NOTIFICATIONS_URL = "/api/v1/notifications";
  var signedIn = document.body.hasAttribute("data-signed-in");

  // ---- time zone ----------------------------------------------------------------------

  function browserZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
    } catch (e) {
      return "UTC";
    }
  }

  var zone = browserZone();
  var renderedZone = document.documentElement.getAttribute("data-tz") || "UTC";
  document.cookie =
    "todo_tz=" + encodeURIComponent(zone) + "; path=/; max-age=31536000; samesite=lax" +
    (location.protocol === "https:" ? "; secure" : "");
  document.querySelectorAll("[data-tz-input]").forEach(function (input) {
    // A form that comes back with errors keeps the zone it was typed in.
    if (!document.querySelector(".error-summary")) input.value = zone;
  });
  if (zone !== renderedZone) {
    document.querySelectorAll("[data-tz-label]").forEach(function (el) { el.textContent = zone; });
    var dueHint = document.getElementById("due_at-hint");
    if (dueHint && !document.querySelector(".error-summary")) dueHint.textContent = "Time zone: " + zone + ".";
    // Times on this page were rendered in another zone: re-render them in the browser's.
    if (document.body.hasAttribute("data-reload-on-tz") && !sessionStorage.getItem("todo_tz_reloaded")) {
      sessionStorage.setItem("todo_tz_reloaded", "1");
      location.reload();
      return;
    }
  }

  // A refused form: move focus to the summary so screen readers hear what to fix.
  var summary = document.getElementById("error-summary");
  if (summary) summary.focus();

  // ---- toasts -------------------------------------------------------------------------

  var toasts = document.getElementById("toasts");

  function armToast(el, timeout) {
    if (!el.querySelector(".toast-close")) {
      var close = document.createElement("button");
      close.type = "button";
      close.className = "toast-close";
      close.setAttribute("aria-label", "Dismiss");
      close.textContent = "×";
      close.addEventListener("click", function () { el.remove(); });
      el.appendChild(close);
    }
    window.setTimeout(function () {
      if (!el.contains(document.activeElement)) el.remove();
    }, timeout || 6000);
  }

  function toast(text, kind, timeout) {
    if (!toasts) return;
    var el = document.createElement("div");
    el.className = "toast toast-" + (kind || "info");
    var span = document.createElement("span");
    span.className = "toast-text";
    span.textContent = text;
    el.appendChild(span);
    toasts.appendChild(el);
    armToast(el, timeout);
    while (toasts.children.length > 4) toasts.firstElementChild.remove();
  }

  if (toasts) Array.prototype.forEach.call(toasts.children, function (el) { armToast(el, 8000); });

  // ---- the task list ------------------------------------------------------------------

  var region = document.getElementById("task-region");
  var refreshing = null;
  var refreshAgain = false;
  var recentLocal = {}; // task id -> time this tab changed it (its own echo is not toasted)

  function markLocal(id) { if (id) recentLocal[id] = Date.now(); }
  // Changes this tab made just before this page loaded (a form post, then a redirect).
  (document.body.getAttribute("data-recent-tasks") || "").split(" ").forEach(markLocal);
  function isRecentLocal(id) { return id && recentLocal[id] && Date.now() - recentLocal[id] < 5000; }

  function goSignIn() {
    location.assign("/signin?next=" + encodeURIComponent(location.pathname + location.search));
  }

  function refreshList(focusTaskId) {
    if (!region) return Promise.resolve();
    if (refreshing) { refreshAgain = true; return refreshing; }
    region.classList.add("is-loading");
    region.setAttribute("aria-busy", "true");
    var url = region.getAttribute("data-list-url") + location.search;
    refreshing = fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.status === 401) { goSignIn(); return; }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text().then(function (html) {
          var hadFocus = region.contains(document.activeElement);
          region.innerHTML = html;
          var title = document.getElementById("list-title");
          var here = title && title.getAttribute("data-here");
          if (here && here !== location.pathname + location.search) history.replaceState(null, "", here);
          if (focusTaskId || hadFocus) restoreFocus(focusTaskId);
        });
      })
      .catch(function () { toast("Could not refresh the list. Reload the page to try again.", "error"); })
      .finally(function () {
        region.classList.remove("is-loading");
        region.removeAttribute("aria-busy");
        refreshing = null;
        if (refreshAgain) { refreshAgain = false; refreshList(); }
      });
    return refreshing;
  }

  function restoreFocus(taskId) {
    var target = taskId && document.querySelector("#task-" + CSS.escape(taskId) + " .check");
    if (!target) {
      target = document.getElementById("list-title");
      if (target) target.setAttribute("tabindex", "-1");
    }
    if (target) target.focus();
  }

  var refreshTimer = null;
  function refreshSoon() {
    window.clearTimeout(refreshTimer);
    refreshTimer = window.setTimeout(function () { refreshList(); }, 150);
  }

  function submitInPlace(form, onDone) {
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    return fetch(form.action, {
      method: "POST",
      body: new FormData(form),
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    })
      .then(function (response) {
        if (response.status === 401) { goSignIn(); return null; }
        return response.json().catch(function () { return { ok: false, message: "Something went wrong. Please try again." }; });
      })
      .then(function (result) {
        if (!result) return;
        if (result.ok) {
          markLocal(result.task_id);
          if (result.message) toast(result.message, "success");
        } else {
          toast(result.message || "Something went wrong. Please try again.", "error");
        }
        if (onDone) onDone(result);
        return refreshList(result.focus_task_id);
      })
      .catch(function () { toast("The server could not be reached. Please try again.", "error"); })
      .finally(function () { buttons.forEach(function (b) { b.disabled = false; }); });
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-async") || !region) return;
    event.preventDefault();
    submitInPlace(form);
  });

  // ---- delete confirmation ------------------------------------------------------------

  var dialog = document.getElementById("confirm-dialog");
  if (dialog && typeof dialog.showModal === "function") {
    var dialogForm = dialog.querySelector("[data-confirm-form]");
    var opener = null;

    document.addEventListener("click", function (event) {
      var link = event.target.closest && event.target.closest("a[data-confirm-delete]");
      if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
      event.preventDefault();
      var target = new URL(link.href, location.href);
      opener = link;
      dialogForm.action = target.pathname;
      dialog.querySelector("[data-confirm-next]").value = target.searchParams.get("next") || "/tasks";
      dialog.querySelector("[data-confirm-text]").textContent =
        "“" + (link.getAttribute("data-title") || "This task") + "” will be deleted. This cannot be undone.";
      dialog.showModal();
      dialog.querySelector("[data-confirm-cancel]").focus();
    });

    dialog.querySelector("[data-confirm-cancel]").addEventListener("click", function () { dialog.close(); });
    dialog.addEventListener("close", function () {
      if (opener && document.contains(opener)) opener.focus();
      opener = null;
    });
    dialogForm.addEventListener("submit", function (event) {
      if (!region) return; // on the edit page: a normal post, then back to the list
      event.preventDefault();
      opener = null;
      submitInPlace(dialogForm, function () { dialog.close(); }).then(function () { restoreFocus(null); });
    });
  }

  // ---- notification bell --------------------------------------------------------------

  var bellRoot = document.querySelector("[data-bell]");
  var bell = null;
  if (bellRoot && signedIn) bell = makeBell(bellRoot);

  function makeBell(root) {
    var button = root.querySelector("#bell-button");
    var panel = root.querySelector("#bell-panel");
    var count = root.querySelector("[data-bell-count]");
    var list = root.querySelector("[data-bell-list]");
    var message = root.querySelector("[data-bell-message]");
    var readAll = root.querySelector("[data-bell-read-all]");
    var state = { available: false, unread: 0, items: [], retry: null };

    root.hidden = false;

    function isRead(n) { return n.read === true || n.is_read === true || !!n.read_at; }
    function text(n) {
      return n.message || n.title || n.text || n.body ||
        (n.task_title ? "Reminder: “" + n.task_title + "”" : "Notification");
    }

    function render() {
      root.setAttribute("data-state", state.available ? "ready" : "unavailable");
      var unread = state.available ? state.unread : 0;
      count.hidden = unread <= 0;
      count.textContent = unread > 99 ? "99+" : String(unread);
      button.setAttribute("aria-label", state.available
        ? "Notifications, " + unread + " unread"
        : "Notifications (unavailable)");
      readAll.hidden = !state.available || unread <= 0;
      list.innerHTML = "";
      if (!state.available) {
        message.hidden = false;
        message.textContent = "Notifications are unavailable right now. We will keep trying.";
        return;
      }
      message.hidden = state.items.length > 0;
      message.textContent = "No notifications yet.";
      state.items.forEach(function (n) {
        var li = document.createElement("li");
        li.className = isRead(n) ? "is-read" : "is-unread";
        var body = document.createElement("span");
        body.className = "bell-text";
        body.textContent = text(n);
        if (n.created_at) {
          var when = document.createElement("time");
          when.className = "bell-time";
          when.dateTime = n.created_at;
          var d = new Date(n.created_at);
          when.textContent = isNaN(d) ? n.created_at : d.toLocaleString();
          body.appendChild(when);
        }
        li.appendChild(body);
        if (!isRead(n) && n.id !== undefined) {
          var mark = document.createElement("button");
          mark.type = "button";
          mark.className = "btn small ghost";
          mark.textContent = "Mark read";
          mark.setAttribute("aria-label", "Mark “" + text(n) + "” as read");
          mark.addEventListener("click", function () {
            post(NOTIFICATIONS_URL + "/" + encodeURIComponent(n.id) + "/read").then(function (ok) {
              if (ok) { n.read = true; state.unread = Math.max(0, state.unread - 1); render(); readAll.focus(); }
            });
          });
          li.appendChild(mark);
        }
        list.appendChild(li);
      });
    }

    function post(url) {
      return fetch(url, { method: "POST", credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (!r.ok) toast("Could not update notifications.", "error");
          return r.ok;
        })
        .catch(function () { toast("Could not update notifications.", "error"); return false; });
    }

    function unavailable() {
      state.available = false;
      render();
      window.clearTimeout(state.retry);
      state.retry = window.setTimeout(refresh, 60000);
    }

    function refresh() {
      return fetch(NOTIFICATIONS_URL, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        })
        .then(function (body) {
          var items = Array.isArray(body) ? body : (body.items || body.notifications || body.data || []);
          if (!Array.isArray(items)) throw new Error("unexpected body");
          state.items = items;
          var unread = Array.isArray(body) ? null : (body.unread_count !== undefined ? body.unread_count : body.unread);
          state.unread = typeof unread === "number" ? unread : items.filter(function (n) { return !isRead(n); }).length;
          state.available = true;
          render();
        })
        .catch(unavailable);
    }

    function toggle(open) {
      panel.hidden = !open;
      button.setAttribute("aria-expanded", String(open));
      if (open) refresh();
    }

    button.addEventListener("click", function () { toggle(panel.hidden); });
    readAll.addEventListener("click", function () {
      post(NOTIFICATIONS_URL + "/read-all").then(function (ok) {
        if (!ok) return;
        state.items.forEach(function (n) { n.read = true; });
        state.unread = 0;
        render();
        button.focus();
      });
    });
    document.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && !panel.hidden) { toggle(false); button.focus(); }
    });
    document.addEventListener("click", function (event) {
      if (!panel.hidden && !root.contains(event.target)) toggle(false);
    });

    refresh();
    return {
      refresh: refresh,
      bump: function () {
        if (!state.available) return;
        state.unread += 1;
        render();
      },
    };
  }

  // ---- live updates -------------------------------------------------------------------

  var live = document.getElementById("live-status");
  var LIVE_TEXT = {
    connecting: "Connecting…",
    on: "Live",
    retry: "Reconnecting…",
    unavailable: "Live updates unavailable",
  };

  function setLive(stateName) {
    if (!live) return;
    live.hidden = false;
    live.setAttribute("data-state", stateName);
    live.querySelector(".live-text").textContent = LIVE_TEXT[stateName];
    live.title = LIVE_TEXT[stateName];
  }

  function parse(event) {
    try {
      return JSON.parse(event.data);
    } catch (e) {
      return {};
    }
  }

  function taskOf(data) {
    var inner = data.data && typeof data.data === "object" ? data.data : data;
    return inner.task || inner.payload || inner;
  }

  function onTaskEvent(type, data) {
    var task = taskOf(data) || {};
    var id = task.id || task.task_id || data.task_id;
    var title = task.title ? "“" + task.title + "”" : "A task";
    if (!isRecentLocal(id)) {
      var verb = { "task.created": "was added", "task.updated": "was updated",
        "task.completed": "was completed", "task.deleted": "was deleted" }[type];
      toast(title + " " + verb + ".", "info");
    }
    refreshSoon();
  }

  function onReminder(data) {
    var task = taskOf(data) || {};
    var title = task.title || task.task_title || data.title;
    var due = task.due_at ? new Date(task.due_at) : null;
    toast("Reminder: " + (title ? "“" + title + "”" : "a task") + " is due" +
      (due && !isNaN(due) ? " at " + due.toLocaleString() : " soon") + ".", "reminder", 12000);
    if (bell) { bell.bump(); bell.refresh(); }
  }

  function dispatch(type, event) {
    var data = parse(event);
    type = type || data.type || data.event;
    if (TASK_EVENTS.indexOf(type) >= 0) onTaskEvent(type, data);
    else if (type === "reminder.due") onReminder(data);
  }

  if (signedIn && "EventSource" in window) {
    var source = null;
    var failures = 0;
    var opened = false;

    var connect = function () {
      setLive(failures ? "retry" : "connecting");
      source = new EventSource(EVENTS_URL, { withCredentials: true });
      source.onopen = function () {
        if (failures > 0 || opened) {
          // Anything missed while away: re-read the list and the bell.
          refreshList();
          if (bell) bell.refresh();
        }
        failures = 0;
        opened = true;
        setLive("on");
      };
      source.onmessage = function (event) { dispatch(null, event); };
      TASK_EVENTS.concat(["reminder.due"]).forEach(function (type) {
        source.addEventListener(type, function (event) { dispatch(type, event); });
      });
      source.onerror = function () {
        // The browser retries by itself (sending Last-Event-ID) after a dropped stream;
        // after a refused one (404, 502, wrong type) or repeated drops, back off instead.
        failures += 1;
        if (source.readyState === EventSource.CONNECTING && failures < 3) {
          setLive("retry");
          return;
        }
        source.close();
        var base = Math.min(30000, 1000 * Math.pow(2, Math.min(failures, 5)));
        var delay = base / 2 + Math.random() * (base / 2);
        setLive(opened && failures < 4 ? "retry" : "unavailable");
        window.setTimeout(connect, delay);
      };
    };
    connect();
    window.addEventListener("pagehide", function () { if (source) source.close(); });
  }

  // For tests and the console.
  window.todo = { toast: toast, refreshList: refreshList };
})();
