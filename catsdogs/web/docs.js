// Swagger UI for the catsdogs API. validatorUrl: null keeps Swagger UI from sending the spec
// to validator.swagger.io, which it does for any host but localhost.
window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "./docs.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    layout: "StandaloneLayout",
  });
};
