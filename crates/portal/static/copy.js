/* Progressive enhancement only: copy and share buttons stay hidden without JavaScript. */
document.querySelectorAll("[data-copy]").forEach(function (button) {
  var field = document.getElementById(button.getAttribute("data-copy"));
  if (!field || !navigator.clipboard) { return; }
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.clipboard.writeText(field.value).then(function () { button.textContent = "Copied"; });
  });
});
document.querySelectorAll("[data-share]").forEach(function (button) {
  var field = document.getElementById(button.getAttribute("data-share"));
  if (!field || !navigator.share) { return; }
  button.hidden = false;
  button.addEventListener("click", function () {
    navigator.share({ title: "Invitation to Snikket", url: field.value }).catch(function () {});
  });
});
