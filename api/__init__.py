"""The REST API: routes, request and response models, auth."""
