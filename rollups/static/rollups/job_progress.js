/* The admin's rebuild job page: while the job is queued or running, follow it through the job
 * API (the admin's session) and move its progress bar; reload the page once it has ended, so
 * that every field shows the outcome. The change list's bars stay as they were drawn. */
(function () {
  "use strict";
  function follow(bar) {
    const text = bar.parentNode.querySelector(".rebuild-progress-text");
    const tick = async () => {
      let job;
      try {
        const response = await fetch(bar.dataset.jobUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
        if (!response.ok) return;
        job = await response.json();
      } catch (error) {
        setTimeout(tick, 2000);
        return;
      }
      const percent = Math.round((job.state === "done" ? 1 : job.progress) * 100);
      bar.value = percent;
      bar.textContent = `${percent} %`;
      if (text) text.textContent = `${percent} % (${job.state})`;
      if (job.state === "done" || job.state === "failed") {
        window.location.reload();
        return;
      }
      setTimeout(tick, 1000);
    };
    tick();
  }
  document.addEventListener("DOMContentLoaded", () => {
    if (!document.body.classList.contains("change-form")) return;
    for (const bar of document.querySelectorAll("progress.rebuild-progress")) {
      if (bar.dataset.state === "queued" || bar.dataset.state === "running") follow(bar);
    }
  });
})();
