"""Pictures and pages: matplotlib figures (``viz``) and the HTML report (``report``).
The only place that turns tensors into images, tables and HTML."""
