"""The signed-in pages of each role: logistics, manufacturer, regulator (the landing page is traceability.views)."""
