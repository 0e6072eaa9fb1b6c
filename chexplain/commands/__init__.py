"""The CLI's commands, one module each; `chexplain.cli` registers them. Shared options live in
`options`, what the commands print and their exit codes in `console`. No stage logic here:
the commands parse, call one stage and print what it returns."""
