"""Pictures and pages: matplotlib figures by subject (``unit_figures``, ``map_figures``,
``training_figures``, on ``figure``), map colours (``heatmaps``), the HTML report
(``report``) and the unit atlas (``atlas``).
The only place that turns tensors into images, tables and HTML."""
