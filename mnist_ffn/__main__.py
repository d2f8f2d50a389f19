from mnist_ffn.cli.commands import console_main

console_main()
