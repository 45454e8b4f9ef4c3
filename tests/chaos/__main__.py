from tests.chaos.run import main

main()
