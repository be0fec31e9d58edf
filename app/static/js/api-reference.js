// The interactive API reference (Swagger UI from node_modules), fed the generated description.
(function () {
  "use strict";
  const target = document.getElementById("api-reference");
  if (!target || typeof window.SwaggerUIBundle !== "function") {
    return;
  }
  window.SwaggerUIBundle({
    url: target.dataset.specUrl,
    domNode: target,
    deepLinking: true,
    docExpansion: "list",
    defaultModelsExpandDepth: 0,
    // "Try it out" sends the dashboard's cookie: reads work as the signed-in administrator;
    // changes need a personal API token (Authorize), which the dashboard then uses alone.
  });
})();
