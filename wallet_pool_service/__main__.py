from wallet_pool_service.app import main

main()
