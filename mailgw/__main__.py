from mailgw.cli import main

main()
