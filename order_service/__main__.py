from order_service.app import main

main()
