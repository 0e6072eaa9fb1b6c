"""HTML reports: one self-contained page per explained radiograph and an index page; the
page's style sheet and scripts are the files in assets/."""
