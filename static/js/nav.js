// The site menu: on narrow screens the navigation folds behind a "Menu" button (without scripts it stays open).
(function () {
  const bar = document.querySelector(".topbar");
  const button = document.getElementById("nav-toggle");
  const nav = document.getElementById("site-nav");
  if (!bar || !button || !nav) return;
  bar.classList.add("collapsible");
  button.hidden = false;
  const set = (open) => {
    button.setAttribute("aria-expanded", open ? "true" : "false");
    bar.classList.toggle("open", open);
  };
  set(false);
  button.addEventListener("click", () => set(button.getAttribute("aria-expanded") !== "true"));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && bar.classList.contains("open")) {
      set(false);
      button.focus();
    }
  });
})();
