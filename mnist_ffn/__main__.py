from mnist_ffn.cli import console_main

console_main()
