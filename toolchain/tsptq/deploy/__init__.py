"""Boards: target descriptions, the serial link and its wire format, running and reporting on a device."""
