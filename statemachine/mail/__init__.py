"""Email: rendering each kind from templates/emails/, and delivering it over SMTP."""
