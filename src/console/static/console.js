// "Replay all shown" with progress: replays the listed events one at a time through the same endpoint as the
// one-event button, and writes each result into its row. Without JavaScript the form posts and the server
// replays them all in one request.
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("replay-all");
  if (!form) return;
  form.addEventListener("submit", async function (e) {
    e.preventDefault();
    var csrf = form.querySelector("input[name=csrf]").value;
    var ids = Array.from(form.querySelectorAll("input[name=id]")).map(function (i) { return i.value; });
    var bar = document.getElementById("replay-progress");
    var text = document.getElementById("replay-count");
    bar.max = ids.length; bar.value = 0; bar.hidden = false;
    form.querySelector("button").disabled = true;
    for (var i = 0; i < ids.length; i++) {
      var cell = document.getElementById("result-" + ids[i]);
      var body = new URLSearchParams({ csrf: csrf });
      try {
        var r = await fetch("/console/events/" + encodeURIComponent(ids[i]) + "/replay", {
          method: "POST", body: body, headers: { "Accept": "application/json" }, credentials: "same-origin" });
        var j = await r.json();
        cell.textContent = j.outcome + (j.error ? ": " + j.error : "");
        cell.className = "outcome-" + j.outcome;
      } catch (err) {
        cell.textContent = "failed: " + err; cell.className = "outcome-failed";
      }
      bar.value = i + 1; text.textContent = (i + 1) + " of " + ids.length + " replayed";
    }
    form.querySelector("button").disabled = false;
  });
});
