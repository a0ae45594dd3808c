// Settings: offer this browser's time zone when it differs from the chosen one. Without JS the list is enough.
(function () {
  "use strict";
  function offer() {
    var select = document.getElementById("time_zone");
    var box = document.querySelector(".timezone-suggestion");
    var zone = window.Intl && Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (!select || !box || !zone || select.value === zone) return;
    var known = Array.prototype.some.call(select.options, function (option) { return option.value === zone; });
    if (!known) return;
    var button = box.querySelector("button");
    button.textContent = "Use this browser's time zone: " + zone;
    box.hidden = false;
    button.addEventListener("click", function () {
      select.value = zone;
      box.hidden = true;
      select.focus();
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", offer);
  else offer();
})();
