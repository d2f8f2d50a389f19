from mnist_ffn.cli import main

main()
