// Pullboard: make every failed htmx request visible. Our own 403/404/409/422 responses carry
// the flash fragment and are swapped by htmx itself (see the htmx-config meta tag); this
// covers the rest: server errors, foreign error pages, and a network that is down.
(function () {
  "use strict";

  function showError(text) {
    var flash = document.getElementById("flash");
    if (!flash) { window.alert(text); return; }
    var p = document.createElement("p");
    p.className = "flash-msg flash-error";
    p.setAttribute("role", "alert");
    p.textContent = text;
    flash.replaceChildren(p);
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.getResponseHeader("HX-Retarget")) { return; }  // already shown
    var status = xhr ? xhr.status : "?";
    showError("The server could not do that (HTTP " + status + "). Reload the page and try again.");
  });

  document.addEventListener("htmx:sendError", function (event) {
    // A poll that fails is not worth a banner; an action that may not have happened is.
    if (event.detail.requestConfig && event.detail.requestConfig.verb === "get") { return; }
    showError("Could not reach Pullboard: your last action may not have been applied. Reload the page to see the current state.");
  });
})();
