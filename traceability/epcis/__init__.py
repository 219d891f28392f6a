"""EPCIS 2.0: the platform's events as GS1 EPCIS JSON-LD, and partners' events captured."""
