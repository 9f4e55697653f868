from mblip.cli import main

main()
